"""Finishing a run whose driver is dead, as ``cancelled`` (used by ``cancel``).

The work is recovery's `settle_dead_run`, the same code that settles a dead parent's child
runs on ``resume``: it takes the run's driver lock (so nobody starts driving it meanwhile),
has the executor reap what every stage left behind (verifying each handle first), finishes
unfinished child runs the same way, and writes the records through `record_finished_run`,
the final-records code of every run. This module only picks the executor that reaps; a
broken config must not keep anyone from stopping a run, so none is required. A run
that ran on Dask is reaped through its recorded scheduler, so that a stage group left on a
worker (its supervisor died with the run) ends too.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path

from codex_orchestrator.engine.recovery import Recovery, settle_dead_run
from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.executors.base import Executor
from codex_orchestrator.executors.choice import Recorded, executor_for
from codex_orchestrator.executors.local import LocalExecutor
from codex_orchestrator.records.manifest import MANIFEST_NAME, load_manifest
from codex_orchestrator.records.statuses import RunStatus, signal_detail
from codex_orchestrator.records.workspace import Settings, Workspace
from codex_orchestrator.util.console import note


def finish_dead_run(
    workspace: Workspace, settings: Settings, run_dir: Path, task_id: str
) -> str | None:
    """Settle the dead run in ``run_dir`` as cancelled; its final status, or None when it could
    not be settled (someone drives it now; a warning line says so)."""
    executor = _reaper(workspace, settings, run_dir)
    recovery = Recovery(workspace, settings, task_id, executor)
    try:
        return settle_dead_run(
            recovery, run_dir, RunStatus.CANCELLED, signal_detail(signal.SIGTERM)
        )
    finally:
        executor.close()


def _reaper(workspace: Workspace, settings: Settings, run_dir: Path) -> Executor:
    """The executor that can end what the run's stages left: the one the run recorded.

    When the recorded Dask scheduler cannot be reached, the local executor stands in (with a
    warning): a remote stage's supervisor ended its group when the dead run's connection
    closed, so only a group whose supervisor died too can be left on a worker.
    """
    local = LocalExecutor(settings.kill_grace_seconds)
    try:
        recorded = Recorded.of(load_manifest(run_dir / MANIFEST_NAME))
    except OrchestratorError:
        return local  # settling reports the unusable manifest
    if recorded.executor in (None, local.name):
        return local
    try:
        chosen = executor_for(
            recorded.executor,
            None,
            workspace,
            _config_settings(workspace),
            settings,
            recorded=recorded,
        )
    except OrchestratorError as error:
        note(f"warning: processes left on {recorded.executor} workers not checked: {error}")
        return local
    return chosen or local


def _config_settings(workspace: Workspace) -> Mapping[str, object]:
    """The config's settings (the executor's among them) when it loads; none otherwise."""
    from codex_orchestrator.pipelines.config import load_config

    try:
        return load_config(workspace.root).settings
    except OrchestratorError:
        return {}
