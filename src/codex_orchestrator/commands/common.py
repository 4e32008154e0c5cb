"""Pieces shared by the run commands: loading the config, building a run context, reporting."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.pipelines.config import Config, load_config
from codex_orchestrator.pipelines.model import Pipeline
from codex_orchestrator.records.cache_field import cache_text, totals_text
from codex_orchestrator.records.manifest import MANIFEST_NAME, ManifestStore, load_manifest
from codex_orchestrator.records.workspace import Settings, Workspace
from codex_orchestrator.util.console import Reporter, log_echo, note

if TYPE_CHECKING:  # the run machinery is imported only by the commands that run (cold start)
    from codex_orchestrator.engine.context import RunContext, RunResult
    from codex_orchestrator.executors.base import Executor


def loaded_config(workspace: Workspace) -> Config:
    """Load and validate the config and print its warnings."""
    config = load_config(workspace.root)
    for warning in config.warnings:
        note(f"warning: {warning}")
    return config


def load(workspace: Workspace) -> tuple[Config, Settings]:
    """Load and validate the config, print its warnings, resolve the settings."""
    config = loaded_config(workspace)
    return config, Settings.resolve(config.settings)


def run_context(
    workspace: Workspace,
    config: Config,
    settings: Settings,
    task_id: str,
    reporter: Reporter,
    executor: Executor | None = None,
    *,
    cache_off: bool = False,
) -> RunContext:
    """Build the context shared by a run and its child runs (default: the local executor);
    ``cache_off`` (``--no-cache``): no stage is served from the stage cache."""
    from codex_orchestrator.engine.context import RunContext
    from codex_orchestrator.evidence.taskindex import task_slug
    from codex_orchestrator.executors.base import Cancellation
    from codex_orchestrator.executors.local import LocalExecutor
    from codex_orchestrator.view.terminal import live_view_wanted

    follow = not reporter.json and sys.stderr.isatty() and not live_view_wanted(reporter.json)
    return RunContext(
        workspace=workspace,
        config=config,
        settings=settings,
        task_id=task_id,
        task_slug=task_slug(workspace.root, task_id) or task_id,
        cancellation=Cancellation(grace_seconds=settings.kill_grace_seconds),
        executor=executor or LocalExecutor(settings.kill_grace_seconds, subreaper=True),
        on_output=log_echo if follow else None,
        after_finish=_write_report if settings.report else None,
        cache_reads=not cache_off,
    )


def _write_report(run_dir: Path) -> None:
    """Write a finished run's HTML report (``settings.report``)."""
    from codex_orchestrator.view.report import report_after_run

    report_after_run(run_dir)


def find_manifest(
    workspace: Workspace, run_id: str, task_id: str | None
) -> tuple[str, Path, dict[str, Any]]:
    """Locate a run by id (under any task unless ``task_id``) and load its manifest."""
    task, run_dir = workspace.require_run(run_id, task_id)
    path = run_dir / MANIFEST_NAME
    return task, run_dir, load_manifest(path, workspace.display(path))


def report_run(workspace: Workspace, reporter: Reporter, result: RunResult) -> int:
    """Print the outcome of start/resume and return the run's exit code."""
    document = {
        "run_id": result.run_id,
        "status": result.status,
        "status_detail": result.status_detail,
        "exit_code": result.exit_code,
        "artifact_root": workspace.display(result.run_dir),
        "manifest": workspace.display(result.run_dir / MANIFEST_NAME),
        "log_path": workspace.display(result.run_dir / "runner.ndjson"),
    }
    detail = f" ({result.status_detail})" if result.status_detail else ""
    lines = [f"run {result.run_id}: {result.status}{detail}"]
    if not reporter.json:
        lines += _stage_lines(result.run_dir / MANIFEST_NAME)
    lines += [f"manifest: {document['manifest']}", f"log: {document['log_path']}"]
    text = "\n".join(lines)
    reporter.result(document, text)
    return result.exit_code


def _stage_lines(manifest_path: Path) -> list[str]:
    """One line per stage: index, id, status and summary."""
    try:
        commands = load_manifest(manifest_path)["commands"]
    except OrchestratorError:
        return []
    lines = [
        f"  {command['index']:>2}. {command['id']:<20} {command['status']:<10} {command.get('summary') or ''}".rstrip()
        + (f"  [{cache_text(command)}]" if cache_text(command) else "")
        for command in commands
    ]
    totals = totals_text(commands)
    return [*lines, f"cache: {totals}"] if totals else lines


def drive(
    args: argparse.Namespace,
    workspace: Workspace,
    reporter: Reporter,
    ctx: RunContext,
    store: ManifestStore,
    pipeline: Pipeline,
) -> int:
    """Run a created or resumed run here (with the live view on a terminal), or detached."""
    from codex_orchestrator.engine.lifecycle import execute

    if getattr(args, "detach", False):
        from codex_orchestrator.engine.detach import detach

        background = ctx._replace(on_output=None)
        return detach(
            workspace,
            reporter,
            store,
            lambda: report_run(workspace, reporter, execute(background, store, pipeline)),
        )
    from codex_orchestrator.view.terminal import show_run

    with show_run(reporter.json, store):
        result = execute(ctx, store, pipeline)
    return report_run(workspace, reporter, result)
