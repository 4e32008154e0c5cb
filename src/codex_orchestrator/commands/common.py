"""Pieces shared by the run commands: loading the config, building a run context, reporting."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from codex_orchestrator.errors import OrchestratorError, UsageError
from codex_orchestrator.pipelines.config import Config, load_config
from codex_orchestrator.pipelines.graph import selected_stages
from codex_orchestrator.pipelines.model import Pipeline
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.workspace import Settings, Workspace
from codex_orchestrator.util.console import Reporter, note, write_stderr
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.suggest import did_you_mean
from codex_orchestrator.util.wording import logs_line, status_text

if TYPE_CHECKING:  # the run machinery is imported only by the commands that run (cold start)
    from codex_orchestrator.engine.context import RunContext, RunResult
    from codex_orchestrator.executors.choice import Recorded
    from codex_orchestrator.records.manifest import Manifest, ManifestStore
    from codex_orchestrator.records.runref import ResolvedRun


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
    args: argparse.Namespace,
    workspace: Workspace,
    config: Config,
    settings: Settings,
    task_id: str,
    pipeline: Pipeline,
    reporter: Reporter,
    recorded: Recorded | None = None,
) -> RunContext:
    """Build the context of the run that ``start`` or ``resume`` drives (and its child runs).

    The executor is the one the flags, the environment, the resumed run's record
    (``recorded``) or the config choose; a cached stage whose outputs it could not restore is
    refused (exit 2) before anything connects. Without a live view, stage output is streamed
    (`view.ci_output`) unless ``--quiet`` or the ``quiet`` setting asks for the summary only;
    ``--no-cache``: no stage is served from the stage cache."""
    from codex_orchestrator.engine.cache_step import refuse_remote_outputs
    from codex_orchestrator.engine.context import RunContext
    from codex_orchestrator.evidence.taskindex import task_slug
    from codex_orchestrator.executors.base import Cancellation
    from codex_orchestrator.executors.choice import chosen_executor, executor_for
    from codex_orchestrator.executors.local import LocalExecutor
    from codex_orchestrator.view.ci_output import echo_sink

    chosen = chosen_executor(args.executor, args.scheduler, config.settings, recorded=recorded)
    refuse_remote_outputs(workspace, config, pipeline, chosen.value)
    executor = executor_for(
        args.executor,
        args.scheduler,
        workspace,
        config.settings,
        settings,
        detached=args.detach,
        recorded=recorded,
    )
    return RunContext(
        workspace=workspace,
        config=config,
        settings=settings,
        task_id=task_id,
        task_slug=task_slug(workspace.root, task_id) or task_id,
        cancellation=Cancellation(grace_seconds=settings.kill_grace_seconds),
        executor=executor or LocalExecutor(settings.kill_grace_seconds, subreaper=True),
        on_output=echo_sink(reporter.json, args.quiet or settings.quiet),
        after_finish=_write_report if settings.report else None,
        cache_reads=not args.no_cache,
    )


def _write_report(run_dir: Path) -> None:
    """Write a finished run's HTML report (``settings.report``)."""
    from codex_orchestrator.view.report import report_after_run

    report_after_run(run_dir)


def only_stages(pipeline: Pipeline, given: list[str] | None) -> tuple[str, ...]:
    """The stage ids of ``--only`` (repeatable, comma-separated), checked against the pipeline:
    an unknown one is bad input (exit 2) with a "did you mean"."""
    requested = [
        validate_id(part.strip(), "stage")
        for option in given or ()
        for part in option.split(",")
        if part.strip()
    ]
    try:
        selected_stages(pipeline.stages, requested)
    except ValueError as error:
        unknown, ids = str(error.args[0]), [stage.id for stage in pipeline.stages]
        raise UsageError(
            f"--only {unknown!r}: pipeline {pipeline.id!r} has no such stage"
            f"{did_you_mean(unknown, ids)} (its stages: {', '.join(ids)})"
        ) from None
    return tuple(dict.fromkeys(requested))


def find_manifest(
    workspace: Workspace, reference: str, task_id: str | None
) -> tuple[ResolvedRun, Manifest]:
    """Resolve a run reference (under any task unless ``task_id``) and load its manifest."""
    from codex_orchestrator.records.runref import resolve_run

    found = resolve_run(workspace, reference, task_id)
    path = RunLayout(found.run_dir).manifest
    from codex_orchestrator.records.manifest import load_manifest

    return found, load_manifest(path, workspace.display(path))


def report_run(workspace: Workspace, reporter: Reporter, result: RunResult) -> int:
    """Print the outcome of start/resume and return the run's exit code."""
    document = {
        "run_id": result.run_id,
        "status": result.status,
        "status_detail": result.status_detail,
        "exit_code": result.exit_code,
        "artifact_root": workspace.display(result.run_dir),
        "manifest": workspace.display(RunLayout(result.run_dir).manifest),
        "log_path": workspace.display(RunLayout(result.run_dir).events),
    }
    from codex_orchestrator.view.ci_output import inert_on_github
    from codex_orchestrator.view.run_end import end_lines, failure_lines

    lines = [f"run {result.run_id}: {status_text(result.status, result.status_detail)}"]
    manifest = _final_manifest(result.run_dir)
    if manifest is not None:
        failures = failure_lines(manifest, result.run_dir)
        if reporter.json and failures:  # stdout holds the one document: failures go to stderr
            write_stderr(inert_on_github("\n".join(failures) + "\n"))
        elif not reporter.json:
            lines += end_lines(manifest, result.run_dir)
    lines += [
        f"manifest: {document['manifest']}",
        logs_line(document["artifact_root"], result.run_id),
    ]
    reporter.result(document, inert_on_github("\n".join(lines) + "\n"))
    return result.exit_code


def _final_manifest(run_dir: Path) -> Manifest | None:
    from codex_orchestrator.records.manifest import load_manifest

    try:
        return load_manifest(RunLayout(run_dir).manifest)
    except OrchestratorError:
        return None


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
    from codex_orchestrator.view.ci_output import github_run_end
    from codex_orchestrator.view.terminal import show_run

    with show_run(reporter.json, store):
        try:
            result = execute(ctx, store, pipeline)
        finally:
            if ctx.on_output is not None:
                ctx.on_output.close()
    github_run_end(store.data)
    return report_run(workspace, reporter, result)
