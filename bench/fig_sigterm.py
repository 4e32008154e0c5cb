"""SIGTERM teardown: the orchestrator gets SIGTERM while its stage runs; seconds to its exit.

One parametrised figure (see `TeardownCase`): a cooperative stage (``sleep 300``), and a stage
that ignores SIGTERM (ended by SIGKILL once ``settings.kill_grace_seconds`` is spent).
Baseline: the same command as a bare ``/bin/sh -c`` process group that gets SIGTERM by
``killpg`` (then, after the grace, SIGKILL), timed until no process of the group is left.
Checks: exit 143, manifest ``cancelled`` / ``signal:SIGTERM``, the stage ``failed``, no live
process of the stage's group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from _harness import BenchRepo, Figure, fmt_seconds, median, progress
from _procs import (
    EXIT_SIGTERM,
    group_members,
    kill_group_quietly,
    load_json,
    spawn_cli,
    stop_cli,
    wait_group_gone,
    wait_stages_running,
)

SETTLE_SECONDS = 0.05
TARGET = "exit 143, cancelled, orphans = 0"


@dataclass(frozen=True)
class TeardownCase:
    """One variant of the figure: the pipeline to run, its stage's command, the grace."""

    key: str
    label: str
    pipeline: str
    command: str
    grace_seconds: float | None
    rounds: int


@dataclass
class _Samples:
    seconds: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    orphans: int = 0
    exit_codes: list[int] = field(default_factory=list)


def _bare_teardown(command: str, grace: float | None) -> float:
    """SIGTERM (then, after ``grace``, SIGKILL) to a bare ``sh -c`` group: seconds until gone."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command], start_new_session=True, stdin=subprocess.DEVNULL
    )
    try:
        time.sleep(SETTLE_SECONDS)
        started = time.perf_counter()
        os.killpg(proc.pid, signal.SIGTERM)
        if grace is not None:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_group_gone(proc.pid)
        return time.perf_counter() - started
    finally:
        kill_group_quietly(proc.pid)
        proc.wait()


def _round(repo: BenchRepo, pipeline: str, task: str, samples: _Samples) -> None:
    """Start ``pipeline``; once its stage runs, SIGTERM the orchestrator and time its exit."""
    proc = spawn_cli(repo, "start", pipeline, "--task", task, "--format", "json")
    groups: list[int] = []
    try:
        manifest_path, groups = wait_stages_running(repo, task, proc)
        time.sleep(SETTLE_SECONDS)
        started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        samples.seconds.append(time.perf_counter() - started)
        samples.orphans += sum(len(group_members(pgid)) for pgid in groups)
        samples.exit_codes.append(proc.returncode)
        manifest = load_json(manifest_path)
        if proc.returncode != EXIT_SIGTERM:
            samples.problems.append(f"{task}: exit {proc.returncode}")
        ended = (manifest.get("status"), manifest.get("status_detail"))
        if ended != ("cancelled", "signal:SIGTERM"):
            samples.problems.append(f"{task}: manifest {ended[0]} ({ended[1]})")
        if manifest["commands"][0].get("status") != "failed":
            samples.problems.append(f"{task}: stage {manifest['commands'][0].get('status')}")
    finally:
        stop_cli(proc)
        for pgid in groups:
            kill_group_quietly(pgid)


def _checks_text(samples: _Samples) -> str:
    codes = sorted(set(samples.exit_codes))
    exits = "exit " + ",".join(str(code) for code in codes) if codes else "no exit"
    cancelled = not any("manifest" in problem for problem in samples.problems)
    expected = "" if codes == [EXIT_SIGTERM] else f" (expected {EXIT_SIGTERM})"
    state = "cancelled" if cancelled else "NOT cancelled"
    return f"{exits}, {state}, orphans = {samples.orphans}{expected}"


def sigterm_figure(repo: BenchRepo, case: TeardownCase) -> Figure:
    """Measure one teardown case against its bare ``killpg`` baseline."""
    grace = f", grace {case.grace_seconds:g} s" if case.grace_seconds is not None else ""
    progress(f"resilience: SIGTERM teardown, `{case.command}`{grace}, {case.rounds} rounds")
    samples = _Samples()
    for index in range(case.rounds):
        samples.baseline.append(_bare_teardown(case.command, case.grace_seconds))
        _round(repo, case.pipeline, f"{case.pipeline}-{index}", samples)
    measured, base = median(samples.seconds), median(samples.baseline)
    if case.grace_seconds is None:
        baseline = f"bare killpg TERM {fmt_seconds(base)}"
        result = f"+{fmt_seconds(measured - base)}"
    else:
        baseline = f"bare TERM+grace+KILL {fmt_seconds(base)}"
        result = f"grace +{fmt_seconds(measured - case.grace_seconds)}"
    problems = f"; problems: {'; '.join(samples.problems)}" if samples.problems else ""
    return Figure(
        key=case.key,
        label=case.label,
        measured=fmt_seconds(measured),
        baseline=baseline,
        result=f"{result}; {_checks_text(samples)}",
        target=TARGET,
        ok=not samples.problems and samples.orphans == 0,
        values={
            "signal_to_exit_s": samples.seconds,
            "bare_teardown_s": samples.baseline,
            "grace_s": case.grace_seconds,
            "orphans": samples.orphans,
            "exit_codes": samples.exit_codes,
            "problems": samples.problems,
        },
        note=(
            f"stage `{case.command}`{grace}; SIGTERM to `start` -> its exit (final manifest, "
            f"metrics, state included); median of {case.rounds}; no time target in the spec"
            + problems
        ),
    )
