"""Recovery: what a dead driver left behind is ended and recorded (resume, settle, reap).

`prepare_resume` readies a failed or dead run for another pass; `settle_dead_run` finishes a
run whose driver is dead (``cancel`` of a dead run; a dead parent's child runs on ``resume``).
Both have the executor reap what the run's stages left, verifying each recorded handle first.
Settling needs no config and no pipeline (`Recovery`): a broken config must not keep anyone
from stopping a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.engine.context import RunContext
from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.executors.base import Executor, Handle
from codex_orchestrator.executors.reaping import Reapers
from codex_orchestrator.persistence.finished_run import record_finished_run
from codex_orchestrator.pipelines.config import CommandStage, Pipeline
from codex_orchestrator.pipelines.graph import NEEDS_FAILED
from codex_orchestrator.records.driver import DriverLock
from codex_orchestrator.records.events import read_events
from codex_orchestrator.records.manifest import (
    EVENTS_NAME,
    MANIFEST_NAME,
    ManifestStore,
    load_manifest,
)
from codex_orchestrator.records.statuses import (
    DONE_STAGE_STATUSES,
    DRIVER_LOST_DETAIL,
    TERMINAL_RUN_STATUSES,
    RunStatus,
    StageStatus,
)
from codex_orchestrator.records.workspace import Settings, Workspace
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.console import note


class Recovery(NamedTuple):
    """What ending a dead driver's leftovers takes: where the task's runs live, the settings,
    and the executor that can end what the stages left."""

    workspace: Workspace
    settings: Settings
    task_id: str
    executor: Executor

    @classmethod
    def of(cls, ctx: RunContext) -> Recovery:
        """The recovery part of a run's context."""
        return cls(ctx.workspace, ctx.settings, ctx.task_id, ctx.executor)


def prepare_resume(
    ctx: RunContext, store: ManifestStore, pipeline: Pipeline, actor: str, reason: str | None
) -> None:
    """Reset a failed or dead run for another pass and record the resume event.

    What a dead orchestrator's stages left behind is ended first, by the executor that knows
    the stage's handle; stages that did not succeed or get skipped (or were skipped because a
    stage they need failed) go back to ``pending`` with the current config's title and command.
    """
    recovery = Recovery.of(ctx)
    _reap_stages(recovery, store)
    _settle_child_runs(recovery, store)
    for entry, stage in zip(store.data["commands"], pipeline.stages, strict=True):
        if entry["status"] not in DONE_STAGE_STATUSES or entry.get("skip_reason") == NEEDS_FAILED:
            command = stage.command if isinstance(stage, CommandStage) else None
            entry.update(
                status=StageStatus.PENDING, title=stage.title, command=command, skip_reason=None
            )
    store.update(
        status=RunStatus.QUEUED,
        status_detail=None,
        exit_code=None,
        completed_at=None,
        metrics_recorded=False,
        heartbeat_interval_seconds=ctx.settings.heartbeat_interval_seconds,
        heartbeat_stale_after_seconds=ctx.settings.heartbeat_stale_after_seconds,
    )
    store.append(
        "resume_events",
        {
            "timestamp": iso_utc(),
            "actor": actor,
            "reason": reason,
            "outcome": RunStatus.IN_PROGRESS,
        },
    )
    store.persist(durable=True)


def _reap_stages(recovery: Recovery, store: ManifestStore) -> None:
    """Have the executor of each handle's kind end what the run's stages left behind (it
    verifies each handle)."""
    reapers = Reapers(recovery.executor, recovery.settings.kill_grace_seconds)
    reapers.reap(recorded_handles(store.run_dir, store.data["commands"]))


def recorded_handles(run_dir: Path, commands: list[dict[str, Any]]) -> list[Handle]:
    """The latest handle of each stage of a run (also used by ``cancel`` of a dead run).

    Handles come from the manifest and from ``runner.ndjson``, which has every handle at once
    while manifest writes of stage transitions may be deferred.
    """
    handles: dict[object, Handle] = {}
    for entry in commands:
        if isinstance(entry.get("handle"), dict):
            handles[entry["index"]] = entry["handle"]
    for event in read_events(run_dir / EVENTS_NAME, "stage_handle"):
        if isinstance(event.get("handle"), dict):
            handles[event.get("index")] = event["handle"]
    return list(handles.values())


def _settle_child_runs(
    recovery: Recovery,
    store: ManifestStore,
    status: RunStatus = RunStatus.FAILED,
    detail: str | None = DRIVER_LOST_DETAIL,
) -> None:
    """End the child runs a dead driver left unfinished: processes ended, records finished
    (with ``status`` and ``detail``, as their parent).

    A child run is driven by its parent's process, so a dead parent means a dead child; the
    child's own driver lock is taken first all the same, and a child someone drives is left be.
    """
    for link in store.data.get("child_runs", []):
        if not isinstance(link, dict) or link.get("status") in TERMINAL_RUN_STATUSES:
            continue
        child_id = link.get("run_id")
        try:
            child_dir = recovery.workspace.run_dir(recovery.task_id, str(child_id))
        except OrchestratorError:
            continue
        link["status"] = settle_dead_run(recovery, child_dir, status, detail) or link.get("status")


def settle_dead_run(
    recovery: Recovery,
    run_dir: Path,
    status: RunStatus = RunStatus.FAILED,
    detail: str | None = DRIVER_LOST_DETAIL,
) -> str | None:
    """Finish an unfinished run whose driver is dead: end what its stages (and its child runs)
    left behind, then write its final records with ``status`` and ``detail``.

    Returns the run's final status, or None when it could not be settled (someone drives it,
    or its directory or manifest is unusable; one warning line says which). A run that had
    already ended is left as it is.
    """
    run_id = run_dir.name
    driver = DriverLock(run_dir)
    try:
        if not driver.acquire():
            note(f"warning: run {run_id} is still driven by another process; left alone")
            return None
    except OSError as error:
        note(f"warning: run {run_id} not settled ({error.strerror})")
        return None
    try:
        manifest = load_manifest(run_dir / MANIFEST_NAME, recovery.workspace.display(run_dir))
        if manifest["status"] in TERMINAL_RUN_STATUSES:
            return str(manifest["status"])
        store = ManifestStore(run_dir, manifest)
        _reap_stages(recovery, store)
        _settle_child_runs(recovery, store, status, detail)
        record_finished_run(
            recovery.workspace,
            recovery.settings,
            store,
            str(manifest["pipeline_id"]),
            status,
            detail,
        )
    except OrchestratorError as error:
        note(f"warning: run {run_id} not settled: {error}")
        return None
    finally:
        driver.release()
    note(f"run {run_id} of a dead driver ended as {status} ({detail})")
    return status
