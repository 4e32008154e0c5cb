"""Finishing a run whose orchestrator is gone, as ``cancelled`` (used by ``cancel``).

Unfinished child runs are finished first. Whatever a running stage left behind is ended by the
executor that knows its handle (`Executor.reap`, which verifies before signalling); then the
run is closed by `record_finished_run`, the final-records code of every run, so the manifest,
run summary, metrics line and state entry are those of a normal cancelled run.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from codex_orchestrator.driver import DriverLock
from codex_orchestrator.errors import RunActiveError
from codex_orchestrator.ids import is_valid_id
from codex_orchestrator.manifest import (
    MANIFEST_NAME,
    ManifestStore,
    load_manifest,
)
from codex_orchestrator.output import note
from codex_orchestrator.records import record_finished_run
from codex_orchestrator.statuses import TERMINAL_RUN_STATUSES, RunStatus, signal_detail
from codex_orchestrator.workspace import Settings, Workspace

MAX_CHILD_DEPTH = 16


def finish_dead_run(workspace: Workspace, settings: Settings, run_dir: Path, depth: int = 0) -> int:
    """Reap and record the dead run in ``run_dir`` as cancelled; return its exit code.

    Takes the run's driver lock first, so a ``resume`` cannot start driving it meanwhile
    (`RunActiveError` when someone drives it now).
    """
    manifest = load_manifest(run_dir / MANIFEST_NAME)
    driver = DriverLock.take(run_dir, str(manifest["run_id"]))
    try:
        return _finish(workspace, settings, run_dir, depth)
    finally:
        driver.release()


def _finish(workspace: Workspace, settings: Settings, run_dir: Path, depth: int) -> int:
    manifest = load_manifest(run_dir / MANIFEST_NAME)  # again, now that nobody else drives it
    if manifest["status"] in TERMINAL_RUN_STATUSES:
        return 0
    for link in manifest.get("child_runs") or []:
        child = link.get("run_id") if isinstance(link, dict) else None
        if not isinstance(child, str) or not is_valid_id(child) or depth >= MAX_CHILD_DEPTH:
            continue
        found = workspace.find_run(child, manifest["task_id"])
        if found is None:
            continue
        try:
            finish_dead_run(workspace, settings, found[1], depth + 1)
        except RunActiveError:
            note(f"warning: child run {child} is driven by another process; left alone")
            continue
        link["status"] = load_manifest(found[1] / MANIFEST_NAME)["status"]
    _reap_stages(run_dir, manifest, settings)
    store = ManifestStore(run_dir, manifest)
    return record_finished_run(
        workspace,
        settings,
        store,
        manifest["pipeline_id"],
        RunStatus.CANCELLED,
        signal_detail(signal.SIGTERM),
    )


def _reap_stages(run_dir: Path, manifest: dict[str, Any], settings: Settings) -> None:
    """End what every stage left behind (a finished stage may leave a helper for later ones),
    through the executor of the handle's kind, which verifies before signalling."""
    from codex_orchestrator.local_executor import KIND, LocalExecutor
    from codex_orchestrator.runner import recorded_handles

    executor = LocalExecutor(settings.kill_grace_seconds)
    try:
        for handle in recorded_handles(run_dir, manifest["commands"]):
            if handle.get("kind") == KIND:
                executor.reap(handle, settings.kill_grace_seconds)
            else:
                note(
                    f"warning: a stage ran on a {handle.get('kind')!r} executor and may still "
                    "run; end it where it runs"
                )
    finally:
        executor.close()
