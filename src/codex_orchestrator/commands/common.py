"""Pieces shared by the run commands: loading the config, building a run context, reporting."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from codex_orchestrator.config import Config, load_config
from codex_orchestrator.errors import OrchestratorError, RunNotFoundError
from codex_orchestrator.executor import Cancellation
from codex_orchestrator.local_executor import LocalExecutor
from codex_orchestrator.manifest import MANIFEST_NAME, load_manifest
from codex_orchestrator.output import Reporter, log_echo, note
from codex_orchestrator.runner import RunContext, RunResult
from codex_orchestrator.workspace import Settings, Workspace


def load(workspace: Workspace) -> tuple[Config, Settings]:
    """Load and validate the config, print its warnings, resolve the settings."""
    config = load_config(workspace.root)
    for warning in config.warnings:
        note(f"warning: {warning}")
    return config, Settings.resolve(config.settings)


def run_context(
    workspace: Workspace, config: Config, settings: Settings, task_id: str, reporter: Reporter
) -> RunContext:
    """Build the context shared by a run and its child runs."""
    from codex_orchestrator.evidence.taskindex import task_slug

    follow = not reporter.json and sys.stderr.isatty()
    return RunContext(
        workspace=workspace,
        config=config,
        settings=settings,
        task_id=task_id,
        task_slug=task_slug(workspace.root, task_id) or task_id,
        cancellation=Cancellation(grace_seconds=settings.kill_grace_seconds),
        executor=LocalExecutor(settings.kill_grace_seconds, subreaper=True),
        on_output=log_echo if follow else None,
    )


def find_manifest(
    workspace: Workspace, run_id: str, task_id: str | None
) -> tuple[str, Path, dict[str, Any]]:
    """Locate a run by id (under any task unless ``task_id``) and load its manifest."""
    found = workspace.find_run(run_id, task_id)
    if found is None:
        where = (
            f"task {task_id!r}"
            if task_id
            else f"any task under {workspace.display(workspace.runs_dir)}"
        )
        raise RunNotFoundError(f"unknown run {run_id!r}: no such run in {where}; check the run id")
    task, run_dir = found
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
    return [
        f"  {command['index']:>2}. {command['id']:<20} {command['status']:<10} {command.get('summary') or ''}".rstrip()
        for command in commands
    ]
