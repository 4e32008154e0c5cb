"""``codex-orchestrator resume RUN``: continue a failed, cancelled or dead run."""

from __future__ import annotations

import argparse
import hmac
from pathlib import Path
from typing import Any

from codex_orchestrator.commands.common import (
    drive,
    find_manifest,
    load,
    report_run,
    run_context,
)
from codex_orchestrator.commands.invocation import default_actor
from codex_orchestrator.engine.context import RunResult
from codex_orchestrator.engine.lifecycle import hash_token
from codex_orchestrator.engine.recovery import prepare_resume
from codex_orchestrator.engine.signals import SignalGuard
from codex_orchestrator.errors import (
    EXIT_OK,
    ResumeRefusedError,
    UnknownPipelineError,
)
from codex_orchestrator.executors.choice import Recorded
from codex_orchestrator.pipelines.config import Pipeline
from codex_orchestrator.records.driver import DriverLock
from codex_orchestrator.records.liveness import refuse_if_alive
from codex_orchestrator.records.manifest import Manifest, ManifestStore
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.statuses import RunStatus
from codex_orchestrator.records.workspace import Workspace, with_flag
from codex_orchestrator.util.console import Reporter, note
from codex_orchestrator.util.safefs import SMALL_FILE_LIMIT, read_regular


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Check the token and liveness, then re-run every stage that did not succeed."""
    workspace = Workspace.from_env()
    found, manifest = find_manifest(workspace, args.run_id, args.task)
    task_id, run_id, run_dir = found
    _check_token(run_dir, manifest, args.token)
    if manifest["status"] == RunStatus.SUCCEEDED:
        return _already_succeeded(workspace, reporter, run_id, run_dir)
    recorded_driver = RunLayout(run_dir).driver_lock.exists()
    driver = DriverLock.take(run_dir, run_id)  # an unwritable run directory: OSError, exit 1
    try:
        # Read again now that no one else can drive the run: the old driver may have
        # written its last records between the first read and taking the lock.
        manifest = find_manifest(workspace, run_id, task_id)[1]
        if manifest["status"] == RunStatus.SUCCEEDED:
            return _already_succeeded(workspace, reporter, run_id, run_dir)
        if not recorded_driver:  # a run recorded before driver locks: judge by its heartbeat
            _check_not_alive(run_dir, manifest, args.force)
        return _resume(args, reporter, workspace, task_id, run_dir, manifest, driver)
    finally:
        driver.release()


def _already_succeeded(workspace: Workspace, reporter: Reporter, run_id: str, run_dir: Path) -> int:
    note(f"run {run_id} already succeeded; nothing to resume")
    result = RunResult(run_id, RunStatus.SUCCEEDED, None, EXIT_OK, run_dir)
    return report_run(workspace, reporter, result)


def _resume(
    args: argparse.Namespace,
    reporter: Reporter,
    workspace: Workspace,
    task_id: str,
    run_dir: Path,
    manifest: Manifest,
    driver: DriverLock,
) -> int:
    run_id = manifest["run_id"]
    config, settings = load(workspace)
    settings = with_flag(settings, "max_parallel", args.max_parallel, "--max-parallel")
    pipeline = _same_pipeline(config.pipelines, manifest)
    ctx = run_context(
        args, workspace, config, settings, task_id, pipeline, reporter, Recorded.of(manifest)
    )
    with SignalGuard(ctx.cancellation):
        store = ManifestStore(run_dir, manifest)
        store.driver = driver
        # a full disk or an unwritable run directory raises before anything ran: exit 1
        prepare_resume(ctx, store, pipeline, args.actor or default_actor(), args.reason)
        note(f"run {run_id} resumed: pipeline {pipeline.id}, task {task_id}")
        return drive(args, workspace, reporter, ctx, store, pipeline)


def _check_token(run_dir: Path, manifest: Manifest, token: str | None) -> None:
    """Compare the token (given, else read from ``.resume-token``) with the manifest's hash."""
    if token is None:
        try:
            raw = read_regular(
                RunLayout(run_dir).resume_token, SMALL_FILE_LIMIT, follow_links=False
            )
            token = raw.decode("utf-8", "replace").strip()
        except OSError as error:
            raise ResumeRefusedError(
                f"cannot read {RunLayout(run_dir).resume_token} ({error.strerror}); pass the token with --token"
            ) from None
    expected = str(manifest.get("resume_token") or "")
    if not hmac.compare_digest(hash_token(token).encode("utf-8"), expected.encode("utf-8")):
        raise ResumeRefusedError(
            f"wrong resume token for run {manifest.get('run_id')}; nothing was changed"
        )


def _check_not_alive(run_dir: Path, manifest: Manifest, force: bool) -> None:
    if not force:
        refuse_if_alive(run_dir, manifest, "wait for it, or pass --force if it is really gone")


def _same_pipeline(pipelines: Any, manifest: Manifest) -> Pipeline:
    pipeline_id = manifest["pipeline_id"]
    if pipeline_id not in pipelines:
        raise UnknownPipelineError(
            f"run {manifest['run_id']} ran pipeline {pipeline_id!r}, which the config no longer defines; "
            "restore it to resume"
        )
    pipeline: Pipeline = pipelines[pipeline_id]
    now_ids = [stage.id for stage in pipeline.stages]
    then_ids = [command["id"] for command in manifest["commands"]]
    if now_ids != then_ids:
        raise ResumeRefusedError(
            f"pipeline {pipeline_id!r} changed since run {manifest['run_id']} (stages then: "
            f"{', '.join(then_ids)}; now: {', '.join(now_ids)}); start a new run instead"
        )
    return pipeline
