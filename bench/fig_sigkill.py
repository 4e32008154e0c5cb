"""SIGKILL at random moments: kill ``start`` at K moments spread (stratified, seeded) over the
life of a run of short stages, from its first manifest to its natural end.

Then every ``*.json`` and ``*.ndjson`` file of the task parses, ``status`` exits 0 and flags an
unfinished run, and ``resume`` (dead-pid detection, no staleness override) ends ``succeeded``
with no survivor of the stage groups the killed run recorded.
"""

from __future__ import annotations

import json
import random
import signal
import time
from dataclasses import dataclass

from _harness import (
    BenchError,
    BenchRepo,
    Figure,
    cli_argv,
    describe_failure,
    fmt_seconds,
    median,
    progress,
    timed_run,
)
from _procs import (
    find_manifest,
    group_members,
    kill_group_quietly,
    load_json,
    recorded_groups,
    spawn_cli,
    task_dirs,
    unparseable_json,
)

KILL_SEED = 20260101
STALE_OVERRIDE_SECONDS = 1.0


def _run_life(repo: BenchRepo, pipeline: str, task: str) -> tuple[float, float]:
    """A whole run: seconds from spawn to its first manifest, and to its exit."""
    started = time.perf_counter()
    proc = spawn_cli(repo, "start", pipeline, "--task", task, "--format", "json")
    while find_manifest(repo, task) is None and proc.poll() is None:
        time.sleep(0.001)
    appeared = time.perf_counter() - started
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"reference {pipeline} run exited {proc.returncode}: {err[-300:]!r}")
    return appeared, time.perf_counter() - started


@dataclass
class _KillTrial:
    """What one SIGKILL left behind and how it recovered."""

    delay_s: float
    status_at_kill: str
    unparseable: list[str]
    temps: int
    status_exit: int
    flagged: bool
    resume_exit: int
    resumed_status: str
    orphans_after_resume: int
    resume_s: float
    resumed_via: str

    @property
    def ok(self) -> bool:
        return (
            not self.unparseable
            and self.status_exit == 0
            and self.resume_exit == 0
            and self.resumed_status == "succeeded"
            and self.orphans_after_resume == 0
        )


def _kill_trial(repo: BenchRepo, pipeline: str, task: str, delay: float) -> _KillTrial:
    proc = spawn_cli(repo, "start", pipeline, "--task", task, "--format", "json")
    deadline = time.perf_counter() + 20
    while (path := find_manifest(repo, task)) is None:
        if proc.poll() is not None or time.perf_counter() > deadline:
            raise BenchError(f"{task}: no manifest appeared (exit {proc.poll()})")
        time.sleep(0.001)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate()
    runs_dir, out_dir = task_dirs(repo, task)
    bad, temps = unparseable_json(runs_dir, out_dir)
    try:
        manifest = load_json(path)
    except ValueError:
        manifest = {"status": "unparseable", "commands": []}
    groups = recorded_groups(manifest)
    run_id = path.parent.name
    _, status = timed_run(
        cli_argv("status", run_id, "--format", "json"), env=repo.env, cwd=repo.root, check=False
    )
    flagged = False
    if status.returncode == 0:
        document = json.loads(status.stdout)
        flagged = bool(document.get("stale") or document.get("hint"))
    resume_s, resumed = timed_run(
        cli_argv("resume", run_id, "--format", "json"), env=repo.env, cwd=repo.root, check=False
    )
    via = "dead-pid"
    if resumed.returncode == 2 and b"still alive" in resumed.stderr + resumed.stdout:
        # no proof of death (e.g. killed before the pid was recorded): wait out a short
        # staleness threshold, as a user would wait out the default one
        via = "stale-override"
        time.sleep(STALE_OVERRIDE_SECONDS + 0.1)
        env = {
            **repo.env,
            "CODEX_ORCHESTRATOR_HEARTBEAT_STALE_AFTER_SECONDS": str(STALE_OVERRIDE_SECONDS),
        }
        resume_s, resumed = timed_run(
            cli_argv("resume", run_id, "--format", "json"), env=env, cwd=repo.root, check=False
        )
    try:
        resumed_status = str(json.loads(resumed.stdout).get("status"))
    except ValueError:
        resumed_status = f"no JSON answer: {describe_failure(['resume', run_id], resumed)}"
    orphans = sum(len(group_members(pgid)) for pgid in groups)
    for pgid in groups:
        kill_group_quietly(pgid)
    bad_after, _ = unparseable_json(runs_dir, out_dir)
    return _KillTrial(
        delay_s=delay,
        status_at_kill=str(manifest.get("status")),
        unparseable=bad + bad_after,
        temps=temps,
        status_exit=status.returncode,
        flagged=flagged,
        resume_exit=resumed.returncode,
        resumed_status=resumed_status,
        orphans_after_resume=orphans,
        resume_s=resume_s,
        resumed_via=via,
    )


def sigkill_figure(
    repo: BenchRepo, *, pipeline: str, stages: int, stage_command: str, kills: int
) -> Figure:
    """SIGKILL runs of ``pipeline`` at ``kills`` moments, then check its files and resume."""
    progress(
        f"resilience: SIGKILL at {kills} moments of a {stages}-stage run, then status + resume"
    )
    lives = [_run_life(repo, pipeline, f"life-{index}") for index in range(2)]
    window = median([end - appeared for appeared, end in lives])
    rng = random.Random(KILL_SEED)
    delays = [window * (index + rng.random()) / kills for index in range(kills)]
    rng.shuffle(delays)
    trials = [
        _kill_trial(repo, pipeline, f"kill-{index}", delay) for index, delay in enumerate(delays)
    ]
    good = sum(trial.ok for trial in trials)
    unparseable = sorted({name for trial in trials for name in trial.unparseable})
    unfinished = [
        trial
        for trial in trials
        if trial.status_at_kill not in ("succeeded", "failed", "cancelled")
    ]
    flagged = sum(trial.flagged for trial in unfinished)
    orphans = sum(trial.orphans_after_resume for trial in trials)
    overridden = sum(trial.resumed_via == "stale-override" for trial in trials)
    at_kill: dict[str, int] = {}
    for trial in trials:
        at_kill[trial.status_at_kill] = at_kill.get(trial.status_at_kill, 0) + 1
    failures = [
        f"kill at +{trial.delay_s * 1000:.0f} ms: status exit {trial.status_exit}, "
        f"resume exit {trial.resume_exit} -> {trial.resumed_status}, "
        f"orphans {trial.orphans_after_resume}, unparseable {trial.unparseable}"
        for trial in trials
        if not trial.ok
    ]
    if good == kills:
        result = f"{len(unparseable)} unparseable files, status exit 0, orphans = {orphans}"
    else:
        result = (
            f"{len(unparseable)} unparseable files, {len(failures)} trial(s) failed, "
            f"orphans = {orphans}"
        )
    return Figure(
        key="resilience.sigkill",
        label=f"SIGKILL at {kills} random moments, then resume",
        measured=f"{good}/{kills} resumed to success",
        baseline=f"run window {fmt_seconds(window)}",
        result=result,
        target=f"{kills}/{kills}, 0 unparseable",
        ok=good == kills and not unparseable,
        values={
            "delays_s": delays,
            "window_s": window,
            "status_at_kill": at_kill,
            "unparseable": unparseable,
            "temp_files_left": sum(t.temps for t in trials),
            "resume_wall_s": [t.resume_s for t in trials],
            "resumed_via": [t.resumed_via for t in trials],
            "status_flagged": flagged,
            "unfinished_at_kill": len(unfinished),
            "failures": failures,
        },
        note=(
            f"{stages} stages `{stage_command}`; kills stratified over the window from the "
            f"first manifest to the natural end (seed {KILL_SEED}); manifest at kill: "
            + ", ".join(f"{name} {count}" for name, count in sorted(at_kill.items()))
            + f"; temp files left by the kills: {sum(t.temps for t in trials)}; resume "
            f"accepted on dead-pid detection {len(trials) - overridden}/{len(trials)}, after "
            f"a {STALE_OVERRIDE_SECONDS:g} s staleness override {overridden}/{len(trials)} "
            f"(median resume {fmt_seconds(median([t.resume_s for t in trials]))}); status "
            f"flagged (stale or resume hint) {flagged}/{len(unfinished)} unfinished runs"
            + (f"; FAILURES: {'; '.join(failures)}" if failures else "")
        ),
    )
