"""What ``start`` and ``resume`` print when a run has ended, after its headline: one line per
stage, a note for a run that ran nothing, and for each failed stage the last lines of its
output and the command that prints all of it (as pytest, cargo and pre-commit do).

Log text comes from the run's own files (`view.logtail`: no link followed, a FIFO never
waited on); the caller prints it through the terminal neutraliser.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codex_orchestrator.records.cache_field import cache_text, totals_text
from codex_orchestrator.records.statuses import RunStatus, StageStatus
from codex_orchestrator.util.jsonio import array_objects
from codex_orchestrator.util.wording import stage_line

#: Lines of each failed stage's output shown after the table.
FAILURE_TAIL_LINES = 20
#: The most read from the end of one log for those lines.
FAILURE_TAIL_BYTES = 16 * 1024
NOTHING_RAN_NOTE = (
    "no stage ran anything: every stage was skipped (a tool is missing, or there is nothing "
    "to run); exit code 3"
)


def stage_lines(manifest: Mapping[str, Any]) -> list[str]:
    """One line per stage (index, id, status, summary, and what the stage cache did), then the
    time the cache saved when it served any stage."""
    lines = []
    for entry in array_objects(manifest.get("commands")):
        cached = cache_text(entry)
        lines.append(stage_line(entry) + (f"  [{cached}]" if cached else ""))
    totals = totals_text(manifest.get("commands"))
    return [*lines, f"cache: {totals}"] if totals else lines


def logs_command(run_id: str, stage_id: str) -> str:
    """The exact command that prints a stage's whole output."""
    import shlex  # only a failed stage needs it: `status` and a passing run start faster

    return shlex.join(["codex-orchestrator", "logs", run_id, stage_id])


def failure_lines(manifest: Mapping[str, Any], run_dir: Path) -> list[str]:
    """For each failed stage: the last `FAILURE_TAIL_LINES` lines of each of its logs that
    has output, and the ``logs`` command for the rest."""
    run_id = str(manifest.get("run_id"))
    lines: list[str] = []
    for entry in array_objects(manifest.get("commands")):
        if entry.get("status") != StageStatus.FAILED:
            continue
        stage_id = str(entry.get("id"))
        for key, stream in (("log_path", "stdout"), ("stderr_log_path", "stderr")):
            shown = _tail(run_dir, entry.get(key))
            if shown:
                what = "line" if len(shown) == 1 else f"{len(shown)} lines"
                lines += ["", f"--- {stage_id} ({stream}, last {what}) ---", *shown]
        lines += ["", f"{stage_id} failed; its whole output: {logs_command(run_id, stage_id)}"]
    return lines


def end_lines(manifest: Mapping[str, Any], run_dir: Path) -> list[str]:
    """Everything printed after the headline, before the paths."""
    lines = stage_lines(manifest)
    if manifest.get("status") == RunStatus.SKIPPED:
        lines.append(NOTHING_RAN_NOTE)
    return lines + failure_lines(manifest, run_dir)


def _tail(run_dir: Path, recorded: object) -> list[str]:
    # only a failed stage's tail reads a log: `status` and a passing run never import the reader
    from codex_orchestrator.view.logtail import run_file, tail_lines

    path = run_file(run_dir, "commands", recorded)
    if path is None:
        return []
    try:
        tail = tail_lines(path, FAILURE_TAIL_LINES, FAILURE_TAIL_BYTES)
    except OSError:  # gone, or not a regular file (`UnreadableFileError`)
        return []
    # a carriage return rewinds a line (progress bars): show what the terminal would have
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in tail.lines]
    while lines and not lines[0].strip():
        lines.pop(0)
    return lines
