"""``report`` and ``logs --follow`` linear in the number of stages; ``report.html`` bounded.

Each figure against a baseline measured in the same run (docs/report.md):

- ``report.linear``: wall time of the whole ``report RUN`` for a finished run of 2,000 trivial
  stages against the same for 200 stages (medians of alternating rounds). Target: within 12x
  (10x the stages); a report that scans the run's folders once per stage grows with the square.
- ``follow.linear``: the same for one ``logs RUN --follow`` pass over a finished run (it prints
  every log once, then exits with the run's code: one poll, which lists the ``commands``
  folder once and reads each stage's logs).
- ``report.bound``: the size of ``report.html`` for a run of 200 stages whose logs are each a
  sparse 1 GiB file ending in 32 KiB of lines of characters HTML must escape (``"<&``),
  against the documented bound (4 MiB of log and error text plus 16 KiB a stage).
"""

from __future__ import annotations

import os
from typing import Any

from _harness import (
    BenchError,
    BenchRepo,
    Figure,
    Profile,
    alternate,
    bench_repo,
    cli_argv,
    fmt_seconds,
    median,
    progress,
    timed_run,
)

SHORT, LONG = 200, 2000
GROWTH_TARGET = 12.0
PER_STAGE_BOUND = 16 * 1024
ESCAPED_TAIL = (b'"<&' * 60 + b"\n") * 180


def _pipeline(name: str, stages: int) -> dict[str, Any]:
    return {"id": name, "stages": [{"id": f"s{i:05d}", "command": "true"} for i in range(stages)]}


def _run(repo: BenchRepo, pipeline: str) -> str:
    _, answer = repo.start(pipeline)
    if answer.get("status") != "succeeded":
        raise BenchError(f"{pipeline} run ended {answer.get('status')}")
    return str(answer["run_id"])


def _linear(key: str, label: str, samples: dict[str, list[float]]) -> Figure:
    short, long = median(samples["short"]), median(samples["long"])
    growth = long / short
    return Figure(
        key,
        label,
        fmt_seconds(long),
        f"{SHORT} stages {fmt_seconds(short)}",
        f"{growth:.2f}x for {LONG // SHORT}x the stages",
        f"<= {GROWTH_TARGET:g}x",
        growth <= GROWTH_TARGET,
        {"short_s": short, "long_s": long, "growth": growth},
    )


def _bound(repo: BenchRepo, run_id: str) -> Figure:
    from codex_orchestrator.view.report import TEXT_BUDGET_BYTES

    run_dir = repo.root / ".runs" / "default" / "cli" / run_id
    logs = 0
    for path in sorted((run_dir / "commands").iterdir()):
        with path.open("r+b") as log:
            log.truncate(1 << 30)
            log.seek(0, os.SEEK_END)
            log.write(ESCAPED_TAIL)
        logs += 1
    timed_run(cli_argv("report", run_id), env=repo.env, cwd=repo.root)
    size = (run_dir / "report.html").stat().st_size
    bound = TEXT_BUDGET_BYTES + SHORT * PER_STAGE_BOUND
    return Figure(
        "report.bound",
        f"report.html, {logs} logs of 1 GiB",
        f"{size / 2**20:.2f} MiB",
        f"bound {bound / 2**20:.2f} MiB",
        f"{size / bound:.2f}x the bound",
        "<= 1x",
        size <= bound,
        {"bytes": size, "bound_bytes": bound, "log_bytes": logs * ((1 << 30) + len(ESCAPED_TAIL))},
        note="bound: 4 MiB of log and error text + 16 KiB a stage (docs/report.md)",
    )


def measure(profile: Profile) -> list[Figure]:
    """Report and follow time at 2,000 stages against 200, and the report's size bound."""
    rounds = 3 if profile.quick else 5
    with bench_repo("report") as repo:
        repo.write_config([_pipeline("short", SHORT), _pipeline("long", LONG)], "short")
        progress(f"report: runs of {SHORT} and {LONG} stages, {rounds} rounds")
        runs = {"short": _run(repo, "short"), "long": _run(repo, "long")}

        def timed(*args: str) -> float:
            return timed_run(cli_argv(*args), env=repo.env, cwd=repo.root)[0]

        report = alternate(
            rounds, [(name, lambda run=run: timed("report", run)) for name, run in runs.items()]
        )
        follow = alternate(
            rounds,
            [(name, lambda run=run: timed("logs", run, "--follow")) for name, run in runs.items()],
        )
        bound = _bound(repo, runs["short"])
    return [
        _linear("report.linear", f"report, {LONG} stages", report),
        _linear("follow.linear", f"logs --follow pass, {LONG} stages", follow),
        bound,
    ]
