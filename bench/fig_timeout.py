"""Timeout teardown: ``timeoutSeconds`` on a ``sleep 300`` stage.

Measured: wall of the whole ``start``; baseline: wall of a one-stage ``true`` run (so start-up
is not counted as teardown). Checks: exit 1, ``stage:<id>:timeout``, no survivor of the group.
"""

from __future__ import annotations

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
from _procs import find_manifest, group_members, kill_group_quietly, load_json, recorded_groups


def timeout_figure(
    repo: BenchRepo,
    *,
    pipeline: str,
    baseline_pipeline: str,
    stage_id: str,
    command: str,
    timeout_seconds: float,
    rounds: int,
) -> Figure:
    """Time ``pipeline`` (one stage ``command`` timing out) against ``baseline_pipeline``."""
    progress(f"resilience: timeoutSeconds {timeout_seconds:g} on `{command}`, {rounds} rounds")
    walls: list[float] = []
    baseline: list[float] = []
    problems: list[str] = []
    orphans = 0
    expected_detail = f"stage:{stage_id}:timeout"
    for index in range(rounds):
        elapsed, answer = repo.start(baseline_pipeline, "--task", f"{baseline_pipeline}-{index}")
        if answer.get("status") != "succeeded":
            raise BenchError(f"one-stage run ended {answer.get('status')}")
        baseline.append(elapsed)
        task = f"{pipeline}-{index}"
        argv = cli_argv("start", pipeline, "--task", task, "--format", "json")
        elapsed, completed = timed_run(argv, env=repo.env, cwd=repo.root, check=False)
        walls.append(elapsed)
        path = find_manifest(repo, task)
        if path is None:
            raise BenchError(describe_failure(argv, completed))
        manifest = load_json(path)
        for pgid in recorded_groups(manifest):
            orphans += len(group_members(pgid))
            kill_group_quietly(pgid)
        if completed.returncode != 1:
            problems.append(f"{task}: exit {completed.returncode}")
        ended = (manifest.get("status"), manifest.get("status_detail"))
        if ended != ("failed", expected_detail):
            problems.append(f"{task}: {ended[0]} ({ended[1]})")
    wall, base = median(walls), median(baseline)
    verdict = f"exit 1, {expected_detail}" if not problems else "WRONG RESULT"
    return Figure(
        key="resilience.timeout",
        label=f"timeout teardown (timeoutSeconds {timeout_seconds:g})",
        measured=fmt_seconds(wall),
        baseline=f"1-stage `true` run {fmt_seconds(base)}",
        result=(
            f"timeout +{fmt_seconds(wall - base - timeout_seconds)} beyond start-up; "
            f"{verdict}, orphans = {orphans}"
        ),
        target="exit 1, stage:<id>:timeout, orphans = 0",
        ok=not problems and orphans == 0,
        values={
            "start_wall_s": walls,
            "true_run_wall_s": baseline,
            "timeout_s": timeout_seconds,
            "orphans": orphans,
            "problems": problems,
        },
        note=(
            f"wall of the whole `start` of a `{command}` stage with timeoutSeconds "
            f"{timeout_seconds:g}, median of {rounds}; overhead = wall - timeout - wall of a "
            "one-stage `true` run" + (f"; problems: {'; '.join(problems)}" if problems else "")
        ),
    )
