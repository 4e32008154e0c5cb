"""Snapshots that wait beside the run records (the out root could not take them), merged into
``state.json`` by ``status`` of one of the task's runs."""

from __future__ import annotations

from collections.abc import Callable

from codex_orchestrator.records.layout import PENDING_DIR_NAME
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.safefs import list_directory


def settle_waiting_snapshots(
    workspace: Workspace, task_id: str, warn: Callable[[str], None]
) -> None:
    """Merge state snapshots that wait beside the runs (the out root could not take them) into
    ``state.json``, when the task's lock is free; never raises. Cheap when none wait."""
    try:
        if not list_directory(workspace.task_runs_dir(task_id) / PENDING_DIR_NAME):
            return
    except OSError:
        return
    from codex_orchestrator.persistence.task_state import TaskStateStore  # only when needed

    store = TaskStateStore(
        workspace.state_dir(task_id), workspace.state_lock_path(task_id), task_id, warn=warn
    )
    try:
        store.read()
    except OSError as error:
        warn(f"warning: task {task_id}: waiting state snapshots not merged yet ({error})")
