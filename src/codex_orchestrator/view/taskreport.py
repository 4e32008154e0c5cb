"""``report --task T``: one page listing a task's runs from its history, newest first.

The history is ``state.json`` plus its archive (``state.archive.ndjson``); each run links to
its report when one was written, else to its manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codex_orchestrator.errors import RunNotFoundError
from codex_orchestrator.persistence.task_state import TaskStateStore
from codex_orchestrator.records.run_layout import REPORT_NAME, RunLayout
from codex_orchestrator.records.workspace import Settings, Workspace
from codex_orchestrator.util.console import note
from codex_orchestrator.util.ids import is_valid_id
from codex_orchestrator.util.jsonio import atomic_write_bytes, encode_record
from codex_orchestrator.util.safefs import (
    TEXT_SIZE_LIMIT,
    UnreadableFileError,
    read_regular,
    real_directory,
)
from codex_orchestrator.view.page import document, esc, link, status_span, table


def _archived(path: Path) -> list[dict[str, Any]]:
    try:
        raw = read_regular(path, TEXT_SIZE_LIMIT, follow_links=False)
    except FileNotFoundError:
        return []
    except UnreadableFileError as error:
        note(f"warning: {path}: archive not listed ({error.reason})")
        return []
    entries = []
    for line in raw.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn line: the rest of the archive still counts
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def task_runs(workspace: Workspace, settings: Settings, task_id: str) -> list[dict[str, Any]]:
    """The task's history entries (recent and archived), one per run id, newest first."""
    store = TaskStateStore.for_task(workspace, settings, task_id, note)
    by_id: dict[str, dict[str, Any]] = {}
    for entry in [*_archived(store.archive_path), *store.read().get("runs", [])]:
        run_id = entry.get("runId")
        if isinstance(run_id, str) and is_valid_id(run_id):
            by_id[run_id] = entry
    return sorted(by_id.values(), key=lambda entry: str(entry.get("timestamp") or ""), reverse=True)


def write_task_report(workspace: Workspace, settings: Settings, task_id: str) -> Path:
    """Write ``<runs>/<task>/report.html`` and return its path; exit 2 for an unknown task."""
    task_dir = workspace.task_runs_dir(task_id)
    runs = task_runs(workspace, settings, task_id)
    if not runs and not task_dir.is_dir():
        raise RunNotFoundError(
            f"unknown task {task_id!r}: no runs under {workspace.display(workspace.runs_dir)} "
            f"and no history in {workspace.display(workspace.state_dir(task_id))}; check the task id"
        )
    rows = []
    for entry in runs:
        run_id = str(entry["runId"])
        run_dir = task_dir / "cli" / run_id
        if RunLayout(run_dir).report.is_file():
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
    path = real_directory(task_dir) / REPORT_NAME  # the task's report, beside its runs'
    atomic_write_bytes(path, encode_record(document(f"Task {task_id}", body)))
    return path
