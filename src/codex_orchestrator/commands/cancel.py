"""``codex-orchestrator cancel RUN``: stop a run from any terminal.

The request (actor, reason, time) is recorded beside the manifest first (`cancelrequest`;
concurrent cancels each keep theirs, and a run that has ended takes none); then the run's
driver is woken (`signals.WAKE_SIGNAL`), only when the kernel shows a live process here
holding the run's driver lock (`liveness.driver_state`; no file's pid is ever trusted). The
driver cancels the run that was asked for, and only it (a child run driven in its parent's
process included), tears it down as for SIGTERM, and its final records turn the request into a
``cancel_events`` entry with ``status_detail: "cancelled"``. A run that ends by itself first
is reported as such. A run whose driver is gone is finished here: what its stages left running
is reaped through the executor, and the records are written by the same final-records code as
a normal run. See ``docs/run-control.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from codex_orchestrator.commands.invocation import default_actor, require_run, settings_or_defaults
from codex_orchestrator.engine.signals import WAKE_SIGNAL
from codex_orchestrator.errors import EXIT_FAILED, EXIT_OK
from codex_orchestrator.persistence.runs import read_manifest
from codex_orchestrator.records.cancel_request import REQUEST_NAME, record_request
from codex_orchestrator.records.driver import DriverProcess, signal_driver
from codex_orchestrator.records.liveness import DriverState, driver_state
from codex_orchestrator.records.manifest import (
    MANIFEST_NAME,
    MAX_CHILD_DEPTH,
    load_child_manifest,
    load_manifest,
)
from codex_orchestrator.records.statuses import TERMINAL_RUN_STATUSES, RunStatus
from codex_orchestrator.records.workspace import Settings, Workspace
from codex_orchestrator.util.console import Reporter

WAIT_SLACK_SECONDS = 5.0


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Cancel the run; exit 0 when done (or already ended), 1 when it could not be stopped."""
    workspace = Workspace.from_env()
    run_id = args.run_id
    task_id, run_dir = require_run(workspace, run_id, args.task)
    manifest = _manifest(workspace, run_dir)
    actor = args.actor or default_actor()
    settings = settings_or_defaults(workspace)
    document: dict[str, Any] = {
        "run_id": run_id,
        "task_id": task_id,
        "previous_status": manifest["status"],
        "action": None,
        "signalled_pid": None,
        "children": [],
        "request": None,
    }
    ended = f"run {run_id} already ended ({{status}}); nothing to cancel"
    if manifest["status"] in TERMINAL_RUN_STATUSES or not record_request(
        run_dir, actor, args.reason
    ):
        document["action"] = "already-ended"
        return _report(workspace, reporter, run_dir, document, ended)
    document["request"] = workspace.display(run_dir / REQUEST_NAME)
    drivers: dict[int, DriverProcess] = {}
    document["children"] = _request_children(
        workspace, task_id, manifest, actor, args.reason, drivers, 0
    )
    state = driver_state(run_dir, manifest)
    if state.process is not None and signal_driver(state.process, WAKE_SIGNAL):
        document.update(action="signalled", signalled_pid=state.process.pid)
        message = (
            f"run {run_id}: cancel requested by {actor}; its orchestrator (pid "
            f"{state.process.pid}) was told to stop it"
        )
    elif state.state in (DriverState.GONE, DriverState.ALIVE) and _finish(
        workspace, settings, run_dir, task_id
    ):
        # "alive" until a moment ago: its driver is gone now (a new driver keeps its lock)
        document["action"] = "finished"
        message = f"run {run_id}: its orchestrator was gone; cancel finished it"
    else:
        document["action"] = "requested"
        message = (
            f"run {run_id}: cancel request recorded, but the run is driven by "
            f"{state.describe}, which cannot be signalled from here (driver {state.state}); "
            "its orchestrator acts on the request if it can read it, else cancel it where it runs"
        )
    for process in drivers.values():  # child runs driven by processes of their own
        if state.process is None or process.pid != state.process.pid:
            signal_driver(process, WAKE_SIGNAL)
    if args.wait and document["action"] == "signalled":
        _wait(workspace, settings, run_dir, settings.kill_grace_seconds + WAIT_SLACK_SECONDS)
    code = _report(workspace, reporter, run_dir, document, message)
    if document["action"] == "requested" or (args.wait and not document["ended"]):
        return EXIT_FAILED
    return code


def _request_children(
    workspace: Workspace,
    task_id: str,
    manifest: dict[str, Any],
    actor: str,
    reason: str | None,
    drivers: dict[int, DriverProcess],
    depth: int,
) -> list[str]:
    """Record the request in every unfinished child run too (they end with their parent), and
    note the verified drivers of those a process of their own drives."""
    requested: list[str] = []
    for link in manifest.get("child_runs") or []:
        child = link.get("run_id") if isinstance(link, dict) else None
        if not isinstance(child, str) or depth >= MAX_CHILD_DEPTH:
            continue
        found = load_child_manifest(workspace, child, task_id, "not cancelled separately")
        if found is None:
            continue
        child_dir, child_manifest = found
        if child_manifest["status"] in TERMINAL_RUN_STATUSES:
            continue
        if not record_request(child_dir, actor, reason):
            continue
        requested.append(child)
        requested += _request_children(
            workspace, task_id, child_manifest, actor, reason, drivers, depth + 1
        )
        process = driver_state(child_dir, child_manifest).process
        if process is not None:
            drivers[process.pid] = process
    return requested


def _wait(workspace: Workspace, settings: Settings, run_dir: Path, seconds: float) -> None:
    """Wait for the run to be recorded as ended; finish it here if its orchestrator dies
    without recording the end (it was already dying when signalled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        manifest = read_manifest(run_dir)
        if manifest is not None and manifest["status"] in TERMINAL_RUN_STATUSES:
            return
        if manifest is not None and driver_state(run_dir, manifest).state is DriverState.GONE:
            time.sleep(0.5)  # its final records may be landing right now
            if (read_manifest(run_dir) or manifest)["status"] not in TERMINAL_RUN_STATUSES:
                _finish(workspace, settings, run_dir, str(manifest["task_id"]))
            return
        time.sleep(0.05)


def _finish(workspace: Workspace, settings: Settings, run_dir: Path, task_id: str) -> bool:
    """Finish a run whose driver is dead as cancelled; False when someone drives it now."""
    from codex_orchestrator.engine.finishing import finish_dead_run

    return finish_dead_run(workspace, settings, run_dir, task_id) is not None


def _report(
    workspace: Workspace, reporter: Reporter, run_dir: Path, document: dict[str, Any], message: str
) -> int:
    manifest = _manifest(workspace, run_dir)
    document.update(
        status=manifest["status"],
        status_detail=manifest.get("status_detail"),
        ended=manifest["status"] in TERMINAL_RUN_STATUSES,
        manifest=workspace.display(run_dir / MANIFEST_NAME),
    )
    if document["action"] == "already-ended":
        message = message.format(status=manifest["status"])
    elif document["ended"] and manifest["status"] != RunStatus.CANCELLED:
        # it ended by itself between the request and the driver acting on it
        document["action"] = "ended-first"
        message = (
            f"run {document['run_id']} ended {manifest['status']} before the cancel took "
            "effect; nothing was cancelled"
        )
    elif document["ended"]:
        message += f"\nrun {document['run_id']} is now {manifest['status']}"
    reporter.result(document, message)
    return EXIT_OK


def _manifest(workspace: Workspace, run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST_NAME
    return load_manifest(path, workspace.display(path))
