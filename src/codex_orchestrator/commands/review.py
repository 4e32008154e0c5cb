"""``review [RUN]``: hand a run (default: the task's newest) to review."""

from __future__ import annotations

import argparse

from codex_orchestrator.evidence.review import review
from codex_orchestrator.records.runref import LAST, resolve_run
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter, note


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Write ``review.md``, launch ``codex review`` if present, record the hand-off."""
    workspace = Workspace.from_env()
    run_dir = resolve_run(workspace, args.run_id or LAST, args.task).run_dir
    result = review(workspace, run_dir, quiet_stdout=reporter.json)
    document = {
        "run_id": result.run_id,
        "task_id": result.task_id,
        "status": result.status,
        "manifest": result.manifest,
        "review_path": result.review_path,
        "mode": result.mode,
        "exit_code": result.exit_code,
        "review": result.review,
    }
    if result.mode == "codex":
        note(f"review: {result.review_path} written; codex review exited {result.exit_code}")
        text = f"review recorded in {result.manifest} (codex review exit {result.exit_code})"
    else:
        text = result.review
    reporter.result(document, text)
    return result.exit_code
