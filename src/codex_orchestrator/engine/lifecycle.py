"""The run lifecycle: create the run, execute it, write its final records.

The flow is `create_run` (run directory, resume token, first manifest) then `execute` (stages,
heartbeat, teardown, final records). ``resume`` re-enters `execute` with an existing manifest
(after `recovery.prepare_resume`). Which stage runs when is the `StageLoop`'s business; what a
stage means for the records is `stages.Stages`'.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from codex_orchestrator.engine.context import ActiveRun, RunContext, RunResult
from codex_orchestrator.engine.heartbeat import Heartbeat
from codex_orchestrator.engine.stages import ChildRuns, run_stages
from codex_orchestrator.errors import EXIT_USAGE, OrchestratorError
from codex_orchestrator.persistence.finished_run import record_finished_run
from codex_orchestrator.pipelines.config import CommandStage, Pipeline
from codex_orchestrator.pipelines.graph import needs_of
from codex_orchestrator.records.cancel_request import watching
from codex_orchestrator.records.driver import DriverLock, driver_identity
from codex_orchestrator.records.events import EventLog
from codex_orchestrator.records.manifest import (
    EVENTS_NAME,
    MANIFEST_VERSION,
    RUNNER_NAME,
    ManifestStore,
    command_entry,
    write_resume_token,
)
from codex_orchestrator.records.statuses import RunStatus, StageStatus, stage_detail
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.console import note
from codex_orchestrator.util.ids import new_run_id
from codex_orchestrator.util.safefs import new_directory, real_directory, remove_tree


def hash_token(token: str) -> str:
    """The manifest's form of a resume token: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def _make_run_dir(workspace: Workspace, task_id: str) -> Path:
    """Create a fresh run directory. A runs root that cannot hold the task's ``cli`` directory
    is bad input (exit 2); failing to create the run directory itself (read-only or full runs
    root) is an environment fault that propagates to the command line's handler (exit 1)."""
    cli_dir = workspace.cli_dir(task_id)
    try:
        real_directory(cli_dir)
    except OSError as error:
        raise OrchestratorError(
            f"cannot create {workspace.display(cli_dir)} ({error.strerror}); make the runs root "
            "(CODEX_ORCHESTRATOR_RUNS_DIR, default .runs) a writable directory",
            exit_code=EXIT_USAGE,
        ) from None
    while True:
        run_id = new_run_id()
        run_dir = cli_dir / run_id
        try:
            new_directory(run_dir)
        except FileExistsError:
            continue
        return run_dir


def create_run(
    ctx: RunContext, pipeline: Pipeline, parent_run_id: str | None, approval_policy: str | None
) -> ManifestStore:
    """Create the run directory, its resume token and its first (queued) manifest.

    A failure before the manifest exists leaves no run directory behind: a directory without
    a manifest would be a run nobody can see, resume or clean.
    """
    run_dir = _make_run_dir(ctx.workspace, ctx.task_id)
    driver = DriverLock(run_dir)
    try:
        driver.acquire()
        new_directory(run_dir / "commands")
        new_directory(run_dir / "errors")
        token = os.urandom(32).hex()
        write_resume_token(run_dir, token)
        store = ManifestStore(
            run_dir,
            _first_manifest(ctx, pipeline, run_dir, token, parent_run_id, approval_policy),
        )
        store.persist()
    except OSError:
        driver.release()
        _remove_unborn_run(run_dir)
        raise
    store.driver = driver
    return store


def _remove_unborn_run(run_dir: Path) -> None:
    """Remove a run directory this process just created and that has no manifest yet."""
    with suppress(OSError):
        remove_tree(run_dir)


def _first_manifest(
    ctx: RunContext,
    pipeline: Pipeline,
    run_dir: Path,
    token: str,
    parent_run_id: str | None,
    approval_policy: str | None,
) -> dict[str, Any]:
    """The queued manifest of the new run in ``run_dir`` (named by its run id)."""
    display = ctx.workspace.display
    now = iso_utc()
    return {
        "version": MANIFEST_VERSION,
        "task_id": ctx.task_id,
        "task_slug": ctx.task_slug,
        "run_id": run_dir.name,
        "parent_run_id": parent_run_id,
        "pipeline_id": pipeline.id,
        "pipeline_title": pipeline.title,
        "pipeline_source": pipeline.source,
        "runner": RUNNER_NAME,
        "executor": ctx.executor.name,
        "executor_options": dict(ctx.executor.options),
        "approval_policy": approval_policy,
        "status": RunStatus.QUEUED,
        "status_detail": None,
        "exit_code": None,
        "started_at": now,
        "completed_at": None,
        "updated_at": now,
        "heartbeat_at": now,
        "heartbeat_interval_seconds": ctx.settings.heartbeat_interval_seconds,
        "heartbeat_stale_after_seconds": ctx.settings.heartbeat_stale_after_seconds,
        "artifact_root": display(run_dir),
        "log_path": display(run_dir / EVENTS_NAME),
        "summary": None,
        "metrics_recorded": False,
        "resume_token": hash_token(token),
        "resume_events": [],
        "approvals": [],
        "commands": _command_entries(pipeline),
        "child_runs": [],
        "run_summary_path": None,
    }


def _command_entries(pipeline: Pipeline) -> list[dict[str, Any]]:
    """The fresh ``commands[]`` of a run, in config order; each names what it ``needs``."""
    needs = needs_of(pipeline.stages)
    entries = []
    for index, stage in enumerate(pipeline.stages, start=1):
        command = stage.command if isinstance(stage, CommandStage) else None
        entry = command_entry(index, stage.id, stage.title, stage.kind, command)
        entry["needs"] = list(needs[stage.id])
        entries.append(entry)
    return entries


def execute(ctx: RunContext, store: ManifestStore, pipeline: Pipeline) -> RunResult:
    """Run every stage that has not succeeded or been skipped, then write the final records.

    The executor is closed before the final records are written, so whatever the stages left
    running (helpers for later stages) has ended by the time the run is recorded as over.
    """
    return _execute(ctx, store, pipeline, close_executor=True)


def _execute(
    ctx: RunContext, store: ManifestStore, pipeline: Pipeline, *, close_executor: bool
) -> RunResult:
    run = ActiveRun(store=store, pipeline=pipeline, events=EventLog(store.run_dir / EVENTS_NAME))
    store.update(
        status=RunStatus.IN_PROGRESS,
        executor=ctx.executor.name,
        executor_options=dict(ctx.executor.options),
        **driver_identity(),
    )
    heartbeat = Heartbeat(
        store,
        ctx.settings.heartbeat_interval_seconds,
        ctx.settings.manifest_throttle_seconds,
        on_failure=lambda error: _heartbeat_failed(run, error),
    )
    run.events.emit("run_started", run_id=run.run_id, pipeline_id=pipeline.id, pid=os.getpid())
    try:  # from here on, whatever fails, the run ends with a terminal manifest
        store.persist()
        heartbeat.start()
        # a `cancel` of this run (and of no other) requests its cancellation
        with watching(run.run_dir, ctx.cancellation, store.data):
            outcome = run_stages(ctx, run, _CHILD_RUNS)
        store.flush()  # a run directory that can no longer be written fails the run here
    except Exception as error:  # an unexpected fault still ends with an honest record
        outcome = _internal_failure(run, error)
    finally:
        heartbeat.stop()
        if close_executor:
            ctx.executor.close()
    run.events.emit(
        "heartbeat_stats",
        ticks=heartbeat.ticks,
        manifest_writes=heartbeat.manifest_writes,
        manifest_writes_total=store.writes,
        failures=heartbeat.failures,
    )
    return _finish(ctx, run, *outcome)


def _internal_failure(run: ActiveRun, error: Exception) -> tuple[RunStatus, str | None]:
    """Fail the run (and its running stages) after an unexpected error in the orchestrator."""
    message = f"orchestrator error: {type(error).__name__}: {error}"
    note(f"error: run {run.run_id}: {message}")
    run.events.emit("internal_error", error=message)
    detail = f"error:{type(error).__name__}"
    with run.store.lock:
        for entry in run.store.data["commands"]:
            if entry["status"] == StageStatus.RUNNING:
                entry.update(status=StageStatus.FAILED, summary=message[:240])
                if detail.startswith("error:"):
                    detail = stage_detail(entry["id"])
    return RunStatus.FAILED, detail


def _heartbeat_failed(run: ActiveRun, error: BaseException) -> None:
    message = f"warning: heartbeat write failed for run {run.run_id}: {error}; retrying next tick"
    note(message)
    run.events.emit("heartbeat_failed", run_id=run.run_id, error=str(error))


def _execute_child(ctx: RunContext, store: ManifestStore, pipeline: Pipeline) -> RunResult:
    """Execute a child run: its parent's executor serves it, and is closed by the parent."""
    return _execute(ctx, store, pipeline, close_executor=False)


_CHILD_RUNS = ChildRuns(create=create_run, execute=_execute_child)


def _finish(ctx: RunContext, run: ActiveRun, status: RunStatus, detail: str | None) -> RunResult:
    exit_code = record_finished_run(
        ctx.workspace, ctx.settings, run.store, run.pipeline.id, status, detail
    )
    detail = run.store.data.get("status_detail")  # the records may name a `cancel` request
    if ctx.after_finish is not None:
        ctx.after_finish(run.run_dir)
    run.events.emit("run_finished", status=status, status_detail=detail, exit_code=exit_code)
    run.events.close()
    if run.store.driver is not None:
        run.store.driver.release()
    return RunResult(run.run_id, status, detail, exit_code, run.run_dir)
