"""``codex-orchestrator report RUN | --task T``: write a run's (or a task's) HTML report;
``report RUN --junit PATH``: the run's JUnit XML instead."""

from __future__ import annotations

import argparse
from pathlib import Path

from codex_orchestrator.commands.common import find_manifest
from codex_orchestrator.errors import EXIT_OK, UsageError
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter
from codex_orchestrator.util.ids import validate_id


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Write the report and print its path (relative to the root when inside it)."""
    workspace = Workspace.from_env()
    task_id = validate_id(args.task, "task") if args.task else None
    document: dict[str, str] = {}
    if args.junit is not None and not args.run_id:
        raise UsageError("--junit needs a run: report RUN --junit PATH (RUN may be @last)")
    if args.run_id:
        found, manifest = find_manifest(workspace, args.run_id, task_id)
        document.update(run_id=found.run_id, task_id=found.task_id)
        if args.junit is not None:
            return _junit(found.run_dir, Path(args.junit), document, reporter)
        from codex_orchestrator.view.report import write_run_report

        path = write_run_report(found.run_dir, manifest)
    elif task_id:
        from codex_orchestrator.view.taskreport import write_task_report

        path = write_task_report(workspace, task_id)
        document.update(task_id=task_id)
    else:
        raise UsageError("report needs a run or a task: report RUN, or report --task TASK")
    document["report"] = workspace.display(path)
    reporter.result(document, document["report"])
    return 0


def _junit(run_dir: Path, path: Path, document: dict[str, str], reporter: Reporter) -> int:
    """Write the run's JUnit XML to ``path`` (relative to the working directory)."""
    from codex_orchestrator.view.junit import write_junit

    if not path.name or not path.parent.is_dir():
        raise UsageError(
            f"--junit {str(path)!r}: no directory {str(path.parent)!r} to write it in; "
            "create it, or name a file in an existing directory"
        )
    write_junit(run_dir, path)
    document["junit"] = str(path)
    reporter.result(document, str(path))
    return EXIT_OK
