"""``codex-orchestrator runs``: every task's runs, newest first, with filters."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator

from codex_orchestrator.errors import UsageError
from codex_orchestrator.persistence.runs import RunRow, TaskHistory, all_runs, task_ids
from codex_orchestrator.records.statuses import RunStatus
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.console import Reporter, note
from codex_orchestrator.util.durations import parse_since
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.numeric import parse_count

DEFAULT_LIMIT = 20
STALE = "stale"
STATUS_CHOICES = (*(status.value for status in RunStatus), STALE)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """List the runs that match the filters; exit 0 (2 on bad input)."""
    workspace = Workspace.from_env()
    limit = parse_limit(args.limit)
    statuses = parse_statuses(args.status)
    pipeline = validate_id(args.pipeline, "pipeline") if args.pipeline else None
    since = iso_utc(parse_since(args.since)) if args.since else None
    tasks = (
        [validate_id(args.task, "task")]
        if args.task
        else task_ids(workspace.runs_dir, workspace.out_dir)
    )
    histories = [TaskHistory(workspace, task, note) for task in tasks]
    rows = (
        row
        for row in all_runs(histories, since, lazy=limit > 0)
        if (pipeline is None or row.pipeline_id == pipeline) and _status_matches(row, statuses)
    )
    selected: Iterator[RunRow] = itertools.islice(rows, limit) if limit else rows
    if args.format == "ndjson":
        _write_ndjson(selected)
        return 0
    listed = list(selected)
    reporter.result({"runs": [row.to_json() for row in listed]}, render(listed))
    return 0


def parse_limit(text: str | None) -> int:
    """``--limit``: a whole number >= 0 (0: no limit); default 20."""
    return DEFAULT_LIMIT if text is None else parse_count(text, "--limit")


def parse_statuses(text: str | None) -> frozenset[str] | None:
    """``--status``: one status or a comma-separated list of them."""
    if text is None:
        return None
    wanted = frozenset(part.strip() for part in text.split(","))
    unknown = sorted(wanted - set(STATUS_CHOICES))
    if unknown:
        raise UsageError(
            f"--status {text!r}: unknown status {unknown[0]!r}; choose from {', '.join(STATUS_CHOICES)}"
        )
    return wanted


def _status_matches(row: RunRow, statuses: frozenset[str] | None) -> bool:
    if statuses is None:
        return True
    return row.status in statuses or (row.stale and STALE in statuses)


def _write_ndjson(rows: Iterator[RunRow]) -> None:
    out = sys.stdout
    batch: list[str] = []
    for row in rows:
        batch.append(row.json_line())
        if len(batch) >= 512:
            out.write("\n".join(batch) + "\n")
            batch.clear()
    if batch:
        out.write("\n".join(batch) + "\n")
    out.flush()


def render(rows: list[RunRow]) -> str:
    """The text table of ``runs``."""
    if not rows:
        return "no runs match"
    header = ("RUN", "TASK", "PIPELINE", "STATUS", "STARTED", "DURATION", "FAILED STAGE")
    table = [header] + [
        (
            row.run_id,
            row.task_id,
            row.pipeline_id,
            STALE if row.stale else row.status + (" (pruned)" if row.pruned else ""),
            (row.started_at or "-")[:19].replace("T", " "),
            _duration_text(row.duration_seconds),
            row.failed_stage or "-",
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
