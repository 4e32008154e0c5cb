"""``codex-orchestrator report RUN | --task T``: write a run's (or a task's) HTML report."""

from __future__ import annotations

import argparse

from codex_orchestrator.commands.common import find_manifest
from codex_orchestrator.errors import UsageError
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter
from codex_orchestrator.util.ids import validate_id


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Write the report and print its path (relative to the root when inside it)."""
    workspace = Workspace.from_env()
    task_id = validate_id(args.task, "task") if args.task else None
    document: dict[str, str] = {}
    if args.run_id:
        from codex_orchestrator.view.report import write_run_report

        task, run_dir, manifest = find_manifest(workspace, validate_id(args.run_id, "run"), task_id)
        path = write_run_report(run_dir, manifest)
        document.update(run_id=args.run_id, task_id=task)
    elif task_id:
        from codex_orchestrator.view.taskreport import write_task_report

        path = write_task_report(workspace, task_id)
        document.update(task_id=task_id)
    else:
        raise UsageError("report needs a run or a task: report RUN, or report --task TASK")
    document["report"] = workspace.display(path)
    reporter.result(document, document["report"])
    return 0
