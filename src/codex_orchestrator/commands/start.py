"""``codex-orchestrator start [PIPELINE]``: run a pipeline for a task."""

from __future__ import annotations

import argparse

from codex_orchestrator.commands.common import (
    drive,
    find_manifest,
    load,
    only_stages,
    run_context,
)
from codex_orchestrator.engine.context import Launch
from codex_orchestrator.engine.lifecycle import create_run
from codex_orchestrator.engine.signals import SignalGuard
from codex_orchestrator.records.workspace import Workspace, resolve_task_id, with_flag
from codex_orchestrator.util.console import Reporter, note
from codex_orchestrator.util.ids import validate_id


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Validate everything, run the pipeline, report the run; return its exit code."""
    workspace = Workspace.from_env()
    task_id = resolve_task_id(args.task)
    if args.pipeline is not None:
        validate_id(args.pipeline, "pipeline")
    config, settings = load(workspace)
    settings = with_flag(settings, "max_parallel", args.max_parallel, "--max-parallel")
    pipeline = config.resolve_pipeline(args.pipeline)
    launch = Launch(only=only_stages(pipeline, args.only), args=tuple(args.stage_args))
    parent = _parent_run(workspace, args.parent_run)
    ctx = run_context(args, workspace, config, settings, task_id, pipeline, reporter)
    with SignalGuard(ctx.cancellation):
        store = create_run(ctx, pipeline, parent, args.approval_policy, launch)
        note(f"run {store.data['run_id']} started: pipeline {pipeline.id}, task {task_id}")
        return drive(args, workspace, reporter, ctx, store, pipeline)


def _parent_run(workspace: Workspace, parent_run: str | None) -> str | None:
    """The full id of the run ``--parent-run`` names (any run reference)."""
    if parent_run is None:
        return None
    return find_manifest(workspace, parent_run, None)[0].run_id
