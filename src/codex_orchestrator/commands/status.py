"""``codex-orchestrator status RUN``: report a run's state, heartbeat and stages."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from codex_orchestrator.errors import EXIT_FAILED
from codex_orchestrator.persistence.pending import settle_waiting_snapshots
from codex_orchestrator.records.cache_field import cache_totals
from codex_orchestrator.records.liveness import assess
from codex_orchestrator.records.manifest import (
    OUTCOME_FIELDS,
    Manifest,
    load_manifest,
)
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.runref import LAST, resolve_run
from codex_orchestrator.records.statuses import TERMINAL_RUN_STATUSES, StageStatus, run_exit_code
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter, note
from codex_orchestrator.util.numeric import parse_number
from codex_orchestrator.util.wording import logs_line, status_text

MAX_WATCH_INTERVAL = 3600
STATUS_FIELDS = (*OUTCOME_FIELDS, "artifact_root", "log_path")


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Report the run once, or follow it with ``--watch`` until it ends."""
    workspace = Workspace.from_env()
    task, _, run_dir = resolve_run(workspace, args.run_id or LAST, args.task)
    settle_waiting_snapshots(workspace, task, note)
    if args.watch:
        from codex_orchestrator.view.terminal import show_manifest

        interval = parse_number(
            args.interval,
            "--interval",
            low=0,
            low_inclusive=False,
            high=MAX_WATCH_INTERVAL,
            fix=f"give a positive number of seconds, at most {MAX_WATCH_INTERVAL}",
        )
        with show_manifest(reporter.json, run_dir) as view:
            return _watch(workspace, run_dir, interval, reporter, progress=view is None)
    path = RunLayout(run_dir).manifest
    document = describe(workspace, run_dir, load_manifest(path, workspace.display(path)))
    reporter.result(document, render(document))
    return 0


def describe(workspace: Workspace, run_dir: Path, manifest: Manifest) -> dict[str, Any]:
    """The status document (README "Commands", docs/run-records.md)."""
    liveness = assess(run_dir, manifest)
    document = {key: manifest.get(key) for key in STATUS_FIELDS}
    document.update(
        manifest=workspace.display(RunLayout(run_dir).manifest),
        heartbeat_at=liveness.heartbeat_at,
        heartbeat_age_seconds=liveness.heartbeat_age_seconds,
        stale=liveness.stale,
        stale_after_seconds=liveness.stale_after_seconds,
        orchestrator_gone=liveness.orchestrator_gone,
        commands=manifest.get("commands", []),
        child_runs=manifest.get("child_runs", []),
    )
    hits, saved = cache_totals(document["commands"])
    document.update(cached_stages=hits, saved_seconds=round(saved, 3))
    if liveness.stale or liveness.orchestrator_gone:
        document["hint"] = (
            f"the run is not progressing; resume it: codex-orchestrator resume {manifest.get('run_id')}"
        )
    return document


def render(document: dict[str, Any]) -> str:
    """Text form of a status document."""
    from codex_orchestrator.view.run_end import stage_lines

    age = document.get("heartbeat_age_seconds")
    finished = document["status"] in TERMINAL_RUN_STATUSES
    beat = f", heartbeat {age:.1f}s ago" if isinstance(age, (int, float)) and not finished else ""
    lines = [
        f"run {document['run_id']} [task {document['task_id']}, pipeline {document['pipeline_id']}]: "
        f"{status_text(document['status'], document.get('status_detail'))}{beat}",
        *stage_lines(document),
    ]
    if document["stale"]:
        lines.append(
            f"STALE: no heartbeat for more than {document['stale_after_seconds']:g}s; "
            f"resume with: codex-orchestrator resume {document['run_id']}"
        )
    elif document.get("orchestrator_gone"):
        lines.append(
            f"DEAD: the orchestrator driving this run is gone; resume with: "
            f"codex-orchestrator resume {document['run_id']}"
        )
    elif document.get("hint"):
        lines.append(document["hint"])
    lines += [f"manifest: {document['manifest']}"]
    lines.append(logs_line(document["artifact_root"], document["run_id"]))
    return "\n".join(lines)


def _watch(
    workspace: Workspace, run_dir: Path, interval: float, reporter: Reporter, progress: bool
) -> int:
    seen: dict[int, str] = {}
    path = RunLayout(run_dir).manifest
    while True:
        manifest = load_manifest(path, workspace.display(path))
        document = describe(workspace, run_dir, manifest)
        if progress:
            _note_progress(document, seen)
        if document["status"] in TERMINAL_RUN_STATUSES:
            reporter.result(document, render(document))
            return run_exit_code(document["status"], document["status_detail"])
        if document["stale"] or document["orchestrator_gone"]:
            # a dead driver is reported at once: waiting for staleness would add nothing
            reporter.result(document, render(document))
            return EXIT_FAILED
        time.sleep(interval)


def _note_progress(document: dict[str, Any], seen: dict[int, str]) -> None:
    for command in document["commands"]:
        if seen.get(command["index"]) != command["status"]:
            seen[command["index"]] = command["status"]
            if command["status"] != StageStatus.PENDING:
                note(f"[{command['index']}] {command['id']}: {command['status']}")
