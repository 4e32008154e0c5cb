"""``report --task T``: one page listing a task's runs from its history, newest first.

The history is ``state.json``, its archive and its pending snapshots, read through the
read-only `TaskStateReader` (the page never writes the task's state); each run links to its
report when one was written, else to its manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codex_orchestrator.errors import RunNotFoundError
from codex_orchestrator.persistence.state_format import TaskStateFiles, TaskStateReader
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import note
from codex_orchestrator.util.jsonio import atomic_write_bytes, encode_record
from codex_orchestrator.util.safefs import real_directory
from codex_orchestrator.view.page import document, esc, link, status_span, table
from codex_orchestrator.view.report import REPORT_NAME


def task_runs(workspace: Workspace, task_id: str) -> list[dict[str, Any]]:
    """The task's history entries (archived, recent and pending), one per run, newest first.
    Read-only: the history is read as it is on disk, never merged or repaired here."""
    reader = TaskStateReader(TaskStateFiles.for_task(workspace, task_id), note, workspace.display)
    return reader.every_run()


def write_task_report(workspace: Workspace, task_id: str) -> Path:
    """Write ``<runs>/<task>/report.html`` and return its path; exit 2 for an unknown task."""
    task_dir = workspace.task_runs_dir(task_id)
    runs = task_runs(workspace, task_id)
    if not runs and not task_dir.is_dir():
        raise RunNotFoundError(
            f"unknown task {task_id!r}: no runs under {workspace.display(workspace.runs_dir)} "
            f"and no history in {workspace.display(workspace.state_dir(task_id))}; check the task id"
        )
    rows = []
    for entry in runs:
        run_id = str(entry["runId"])
        run_dir = task_dir / "cli" / run_id
        if (run_dir / REPORT_NAME).is_file():
            target = link(f"cli/{run_id}/{REPORT_NAME}", run_id)
        elif run_dir.is_dir():
            target = (
                link(f"cli/{run_id}/manifest.json", run_id)
                + ' <span class="muted">(no report yet)</span>'
            )
        else:
            target = esc(run_id) + ' <span class="muted">(run directory removed)</span>'
        status = status_span(entry.get("status")) + (" (pruned)" if entry.get("pruned") else "")
        rows.append([target, esc(entry.get("pipelineId")), status, esc(entry.get("timestamp"))])
    body = (
        f"<h1>Task {esc(task_id)}</h1><p>{len(runs)} runs recorded in the task's history, newest first.</p>"
        + table(("run", "pipeline", "status", "completed"), rows)
    )
    path = real_directory(task_dir) / REPORT_NAME
    atomic_write_bytes(path, encode_record(document(f"Task {task_id}", body)))
    return path
