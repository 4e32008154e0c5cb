"""``codex-orchestrator stats``: success rates, guardrail coverage and durations from metrics."""

from __future__ import annotations

import argparse
from typing import Any

from codex_orchestrator.persistence.runs import task_ids
from codex_orchestrator.persistence.stats import TaskFigures, collect
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter, note
from codex_orchestrator.util.durations import parse_since
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.jsonio import atomic_write_json
from codex_orchestrator.util.safefs import real_directory
from codex_orchestrator.util.wording import plural

SUMMARY_NAME = "metrics-summary.json"


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Aggregate every task's ``metrics.json`` (or ``--task``'s); exit 0 (2 on bad input)."""
    workspace = Workspace.from_env()
    since = parse_since(args.since) if args.since else None
    tasks = (
        [validate_id(args.task, "task")]
        if args.task
        else task_ids(workspace.runs_dir, workspace.out_dir)
    )
    reports = []
    written = []
    for task in tasks:
        path = workspace.task_runs_dir(task) / "metrics.json"
        if not path.exists() and args.task is None:
            continue
        figures = TaskFigures(task, workspace.display(path))
        collect(figures, path, since)
        reports.append(figures.to_json())
        if args.write:
            target = workspace.task_runs_dir(task) / SUMMARY_NAME
            real_directory(target.parent)
            atomic_write_json(target, figures.summary(), durable=True)
            written.append(workspace.display(target))
            note(f"wrote {workspace.display(target)}")
    document: dict[str, Any] = {
        "tasks": reports,
        "parse_errors": sum(report["parse_errors"] for report in reports),
    }
    if args.write:
        document["written"] = written
    reporter.result(document, render(reports))
    return 0


def render(reports: list[dict[str, Any]]) -> str:
    """Text form: a line per task and pipeline, then a line per stage."""
    if not reports:
        return "no metrics recorded"
    lines = []
    for report in reports:
        errors = f", {report['parse_errors']} unparseable lines" if report["parse_errors"] else ""
        lines.append(f"task {report['task_id']}: {_figures(report)}{errors}")
        for pipeline in report["pipelines"]:
            lines.append(f"  pipeline {pipeline['pipeline_id']}: {_figures(pipeline)}")
            for stage in pipeline["stages"]:
                p50 = stage["duration_p50_seconds"]
                lines.append(
                    f"    {stage['stage_id']:<20} failures {stage['failures']}, retries "
                    f"{stage['retries']}, p50 {_seconds(p50)}"
                )
    return "\n".join(lines)


def _figures(figures: dict[str, Any]) -> str:
    durations = figures["duration_seconds"]
    return (
        f"{plural(figures['runs'], 'run')}, {figures['succeeded']} succeeded, {figures['failed']} failed, "
        f"{figures['cancelled']} cancelled, {figures['skipped']} skipped; success {_percent(figures['success_rate'])}, "
        f"guardrails {_percent(figures['guardrail_coverage'])}; duration p50 "
        f"{_seconds(durations['p50'])}, p95 {_seconds(durations['p95'])}, max "
        f"{_seconds(durations['max'])}"
    )


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
