"""``tasks check|mark|new``: task checklists and the manifests that prove their items."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from codex_orchestrator.errors import EXIT_FAILED, EXIT_OK
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.wording import plural


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Dispatch to the ``tasks`` action named on the command line."""
    workspace = Workspace.from_env()
    if args.task is not None:
        validate_id(args.task, "task")
    if args.tasks_command == "check":
        return _check(workspace, args.task, reporter)
    if args.tasks_command == "mark":
        return _mark(workspace, args, reporter)
    return _new(workspace, args, reporter)


def _check(workspace: Workspace, task: str | None, reporter: Reporter) -> int:
    from codex_orchestrator.evidence.check import check_tasks

    reports = check_tasks(workspace, task)
    count = sum(len(report.problems) for report in reports)
    document = {
        "tasks": [
            {
                "task": report.task,
                "problems": [problem.as_json() for problem in report.problems],
                "notes": [note.as_json() for note in report.notes],
            }
            for report in reports
        ],
        "problem_count": count,
    }
    lines: list[str] = []
    for report in reports:
        if report.problems:
            lines.append(f"task {report.task}: {plural(len(report.problems), 'problem')}")
            lines.extend(problem.as_text() for problem in report.problems)
            lines.append("")
        if report.notes:
            lines.append(f"task {report.task}: {plural(len(report.notes), 'note')}")
            lines.extend(f"{note.as_text()} (note)" for note in report.notes)
            lines.append("")
    troubled = sum(1 for report in reports if report.problems)
    if not reports:
        lines.append("tasks check: no tasks found (no tasks/index.json entries, no checklists)")
    elif count:
        checked = plural(len(reports), "task")
        lines.append(f"tasks check: {plural(count, 'problem')} in {troubled} of {checked}")
    else:
        lines.append(f"tasks check: {plural(len(reports), 'task')}, no problems")
    reporter.result(document, "\n".join(lines))
    return EXIT_FAILED if count else EXIT_OK


def _mark(workspace: Workspace, args: argparse.Namespace, reporter: Reporter) -> int:
    from codex_orchestrator.evidence.mark import mark

    result = mark(workspace, args.task, args.item, args.run_option)
    lines = [f"task {result.task}: item '{result.item}' done, evidence {result.evidence}"]
    lines.append(f"  recorded  {result.record} (commit it: the evidence of a fresh clone)")
    for cached in result.cached:
        where = f" (in worktree {cached.worktree})" if cached.worktree is not None else ""
        lines.append(
            f"  cached    stage {cached.stage}: ran in run {cached.run_id}, {cached.manifest}{where}"
        )
    lines += [f"  changed   {path}" for path in result.changed]
    lines += [f"  unchanged {path} (already marked with this run)" for path in result.unchanged]
    lines += [
        f"  skipped   {path} (the item is not in this mirror)" for path in result.without_item
    ]
    lines += [f"  skipped   {path} (holds no checklist of this task)" for path in result.absent]
    reporter.result(asdict(result), "\n".join(lines))
    return EXIT_OK


def _new(workspace: Workspace, args: argparse.Namespace, reporter: Reporter) -> int:
    from codex_orchestrator.evidence.scaffold import scaffold

    result = scaffold(workspace.root, args.task, args.title)
    lines = [f"task {result.task}: scaffolded"]
    lines += [f"  created {path}" for path in result.created]
    lines += [f"  updated {path}" for path in result.updated]
    lines += [f"  kept    {path} (already exists)" for path in result.kept]
    reporter.result(asdict(result), "\n".join(lines))
    return EXIT_OK
