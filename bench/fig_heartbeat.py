"""The heartbeat's cadence: runs of a stage sleeping S s with a 0.1 s heartbeat and a 1 s
manifest throttle (in parallel, one task each); the ``heartbeat_stats`` event of
``runner.ndjson``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _harness import BenchError, BenchRepo, Figure, median, progress
from _procs import load_json, spawn_cli

HEARTBEAT_INTERVAL = 0.1
MANIFEST_THROTTLE = 1.0


def _heartbeat_stats(run_dir: Path) -> dict[str, Any]:
    for line in (run_dir / "runner.ndjson").read_bytes().splitlines():
        if line.strip():
            event = json.loads(line)
            if event.get("event") == "heartbeat_stats":
                return dict(event)
    raise BenchError(f"no heartbeat_stats event in {run_dir / 'runner.ndjson'}")


def heartbeat_figures(
    repo: BenchRepo, *, pipeline: str, stage_seconds: float, runs: int
) -> list[Figure]:
    """Ticks and throttled manifest writes of ``runs`` parallel runs of a sleeping stage."""
    seconds = stage_seconds
    progress(
        f"resilience: heartbeat, {runs} parallel runs of a {seconds:g} s "
        f"stage (interval {HEARTBEAT_INTERVAL:g} s, throttle {MANIFEST_THROTTLE:g} s)"
    )
    env = dict(repo.env)
    env["CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS"] = str(HEARTBEAT_INTERVAL)
    env["CODEX_ORCHESTRATOR_MANIFEST_THROTTLE_SECONDS"] = str(MANIFEST_THROTTLE)
    tasks = [f"{pipeline}-{index}" for index in range(runs)]
    procs = [
        spawn_cli(repo, "start", pipeline, "--task", task, "--format", "json", env=env)
        for task in tasks
    ]
    ticks_pm: list[float] = []
    writes_pm: list[float] = []
    writes: list[int] = []
    failures: list[int] = []
    for task, proc in zip(tasks, procs, strict=True):
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise BenchError(f"heartbeat run {task} exited {proc.returncode}: {err[-300:]!r}")
        answer = json.loads(out)
        manifest = load_json(repo.root / answer["manifest"])
        stats = _heartbeat_stats(repo.root / answer["artifact_root"])
        duration = float(manifest["duration_seconds"])
        ticks_pm.append(stats["ticks"] / duration * 60)
        writes_pm.append(stats["manifest_writes"] / duration * 60)
        writes.append(int(stats["manifest_writes"]))
        failures.append(int(stats["failures"]))
    max_writes = seconds / MANIFEST_THROTTLE + 1
    nominal_ticks = 60 / HEARTBEAT_INTERVAL
    nominal_writes = 60 / MANIFEST_THROTTLE
    values = {
        "ticks_per_min": ticks_pm,
        "manifest_writes_per_min": writes_pm,
        "manifest_writes": writes,
        "failures": failures,
        "stage_seconds": seconds,
        "interval_s": HEARTBEAT_INTERVAL,
        "throttle_s": MANIFEST_THROTTLE,
    }
    return [
        Figure(
            key="resilience.heartbeat_ticks",
            label=f"heartbeat ticks/min (interval {HEARTBEAT_INTERVAL:g} s)",
            measured=f"{median(ticks_pm):.0f}/min",
            baseline=f"nominal {nominal_ticks:.0f}/min",
            result=f"{median(ticks_pm) / nominal_ticks:.2f}x nominal, failures = {sum(failures)}",
            target="",
            ok=None,
            values=values,
            note=(
                f"heartbeat_stats of runner.ndjson over the run's duration_seconds; a {seconds:g} s "
                f"stage, median of {runs} runs in parallel"
            ),
        ),
        Figure(
            key="resilience.heartbeat_writes",
            label=f"heartbeat manifest writes/min (throttle {MANIFEST_THROTTLE:g} s)",
            measured=f"{median(writes_pm):.1f}/min",
            baseline=f"throttle cap {nominal_writes:.0f}/min",
            result=f"max {max(writes)} writes in a {seconds:g} s stage, failures = {sum(failures)}",
            target=f"<= S/throttle + 1 = {max_writes:g}, 0 failures",
            ok=max(writes) <= max_writes and sum(failures) == 0,
            values=values,
        ),
    ]
