"""What the live view shows for a run, as plain text rows (no terminal code here).

Built from a snapshot of the manifest and the run directory only, so the same rows serve
``start``/``resume`` (the in-memory manifest) and ``status --watch`` (the manifest on disk).
The manifest may be tampered with; every field is checked before use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.records.cache_field import hit_from, saved_seconds, totals_text
from codex_orchestrator.records.run_layout import COMMANDS_DIR_NAME
from codex_orchestrator.records.statuses import TERMINAL_RUN_STATUSES, StageStatus
from codex_orchestrator.util.clock import parse_iso_utc
from codex_orchestrator.util.jsonio import array_objects
from codex_orchestrator.util.numeric import finite
from codex_orchestrator.util.safefs import UnreadableFileError
from codex_orchestrator.util.terminal_text import last_line, neutralise
from codex_orchestrator.util.wording import status_text
from codex_orchestrator.view.logtail import read_tail, run_file

#: Returns the manifest to draw now (None: nothing to draw yet); called from the view's thread.
#: `view.terminal` makes one, `view.live` calls it.
Snapshot = Callable[[], Mapping[str, Any] | None]
#: Bytes read from the end of a running stage's logs to find its last line.
TAIL_PEEK_BYTES = 4096
MARKS: dict[str, str] = {
    StageStatus.PENDING: "·",
    StageStatus.RUNNING: "▶",
    StageStatus.SUCCEEDED: "✓",
    StageStatus.FAILED: "✗",
    StageStatus.SKIPPED: "↷",
}
UNKNOWN_MARK = "?"


class StageRow(NamedTuple):
    """One line of the view: a stage's status, mark, id, clock and detail."""

    status: str
    mark: str
    stage_id: str
    clock: str
    detail: str


def format_seconds(seconds: float | None, *, tenths: bool = True) -> str:
    """``4.2s`` (``4s`` without ``tenths``), ``3m07s``, ``2h05m``; empty when unknown (or not
    a finite number: a tampered record)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s" if tenths else f"{int(seconds)}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _text(value: object) -> str:
    return neutralise(str(value), keep_newlines=False) if value is not None else ""


def _elapsed(entry: Mapping[str, Any], now: float, run_live: bool) -> float | None:
    started = (
        parse_iso_utc(entry["started_at"]) if isinstance(entry.get("started_at"), str) else None
    )
    if entry.get("status") == StageStatus.RUNNING and run_live and started is not None:
        return now - started
    return recorded_seconds(entry)


def recorded_seconds(entry: Mapping[str, Any]) -> float | None:
    """How long a stage (or a run) took as recorded: ``duration_seconds`` (when it is a finite
    number), else start to end."""
    duration = finite(entry.get("duration_seconds"))
    if duration is not None:
        return duration
    started, completed = entry.get("started_at"), entry.get("completed_at")
    begun = parse_iso_utc(started) if isinstance(started, str) else None
    ended = parse_iso_utc(completed) if isinstance(completed, str) else None
    return ended - begun if begun is not None and ended is not None else None


def running_line(run_dir: Path, entry: Mapping[str, Any]) -> str:
    """The last line a running stage printed, from whichever of its logs changed last."""
    newest: tuple[float, bytes] | None = None
    for key in ("log_path", "stderr_log_path"):
        path = run_file(run_dir, COMMANDS_DIR_NAME, entry.get(key))
        if path is None:
            continue
        try:
            mtime = path.lstat().st_mtime
            data, _size = read_tail(path, TAIL_PEEK_BYTES)
        except (OSError, UnreadableFileError):
            continue
        if data.strip() and (newest is None or mtime >= newest[0]):
            newest = (mtime, data)
    return last_line(newest[1]) if newest else ""


def _detail(run_dir: Path, entry: Mapping[str, Any], run_live: bool) -> str:
    status = entry.get("status")
    if status == StageStatus.RUNNING:
        if not run_live:
            return "not running: the run is no longer in progress"
        if entry.get("kind") == "subpipeline":
            return f"child run {_text(entry.get('sub_run_id'))}"
        return running_line(run_dir, entry)
    summary = _text(entry.get("summary"))
    if hit_from(entry) is not None:
        return f"cached, saved {format_seconds(saved_seconds(entry))} · {summary}"
    return summary


def stage_rows(
    manifest: Mapping[str, Any], run_dir: Path, now: float | None = None
) -> list[StageRow]:
    """One row per ``commands[]`` entry, in manifest order."""
    moment = time.time() if now is None else now
    run_live = manifest.get("status") not in TERMINAL_RUN_STATUSES
    rows: list[StageRow] = []
    for entry in array_objects(manifest.get("commands")):
        status = str(entry.get("status"))
        attempts = entry.get("attempts")
        detail = _detail(run_dir, entry, run_live)
        if isinstance(attempts, int) and attempts > 1:
            detail = f"attempt {attempts}: {detail}" if detail else f"attempt {attempts}"
        rows.append(
            StageRow(
                status=status,
                mark=MARKS.get(status, UNKNOWN_MARK),
                stage_id=_text(entry.get("id")),
                clock=format_seconds(
                    _elapsed(entry, moment, run_live),
                    tenths=not (run_live and status == StageStatus.RUNNING),
                ),
                detail=detail,
            )
        )
    return rows


def headline(manifest: Mapping[str, Any], now: float | None = None) -> str:
    """``run <id> · pipeline <p> · <status> (<detail>) · <elapsed>``."""
    moment = time.time() if now is None else now
    status = _text(manifest.get("status"))
    detail = manifest.get("status_detail")
    started = manifest.get("started_at")
    begun = parse_iso_utc(started) if isinstance(started, str) else None
    completed = manifest.get("completed_at")
    ended = parse_iso_utc(completed) if isinstance(completed, str) else None
    elapsed = (
        format_seconds((ended or moment) - begun, tenths=ended is not None)
        if begun is not None
        else ""
    )
    parts = [
        f"run {_text(manifest.get('run_id'))}",
        f"pipeline {_text(manifest.get('pipeline_id'))}",
        status_text(status, _text(detail) if detail else None),
    ]
    cached = totals_text(manifest.get("commands"))
    return " · ".join(parts + ([elapsed] if elapsed else []) + ([cached] if cached else []))


def fit_rows(rows: Sequence[StageRow], height: int) -> tuple[list[StageRow], str]:
    """At most ``height`` rows for a small terminal, and a line counting what was left out.

    Running and failed stages are kept first; the rest fill the remaining lines in order.
    """
    if len(rows) <= height:
        return list(rows), ""
    room = max(1, height - 1)
    urgent = {i for i, row in enumerate(rows) if row.status in ("running", "failed")}
    keep = sorted(urgent)[:room]
    keep += [i for i in range(len(rows)) if i not in urgent][: room - len(keep)]
    kept = set(keep)
    hidden: dict[str, int] = {}
    for i, row in enumerate(rows):
        if i not in kept:
            hidden[row.status] = hidden.get(row.status, 0) + 1
    counts = ", ".join(f"{count} {status}" for status, count in sorted(hidden.items()))
    return [rows[i] for i in sorted(kept)], f"… {len(rows) - len(kept)} more stages ({counts})"
