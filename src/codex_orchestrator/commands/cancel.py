"""``codex-orchestrator cancel RUN``: stop a run from any terminal.

The request (actor, reason, time) is recorded beside the manifest first; then the run's
orchestrator is sent SIGTERM, only once its recorded pid, process start time and host match a
live process here (a reused pid is never signalled). The orchestrator tears the run down as
for SIGTERM and its final records turn the request into a ``cancel_events`` entry with
``status_detail: "cancelled"``. A run whose orchestrator is gone is finished here: what its
stages left running is reaped through the executor, and the records are written by the same
final-records code as a normal run. See ``docs/run-control.md``.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

from codex_orchestrator.cancelrequest import REQUEST_NAME, write_request
from codex_orchestrator.driver import DRIVER_LOCK_NAME, run_driver
from codex_orchestrator.errors import EXIT_FAILED, EXIT_OK
from codex_orchestrator.history import read_manifest
from codex_orchestrator.invocation import default_actor, require_run, settings_or_defaults
from codex_orchestrator.manifest import MANIFEST_NAME, load_child_manifest, load_manifest
from codex_orchestrator.output import Reporter
from codex_orchestrator.procfs import checked_pid, host_name
from codex_orchestrator.statuses import TERMINAL_RUN_STATUSES
from codex_orchestrator.workspace import Settings, Workspace

WAIT_SLACK_SECONDS = 5.0
MAX_CHILD_DEPTH = 16


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
    if manifest["status"] in TERMINAL_RUN_STATUSES:
        document["action"] = "already-ended"
        return _report(
            workspace,
            reporter,
            run_dir,
            document,
            f"run {run_id} already ended ({manifest['status']}); nothing to cancel",
        )
    write_request(run_dir, actor, args.reason)
    document["request"] = workspace.display(run_dir / REQUEST_NAME)
    document["children"] = _request_children(workspace, task_id, manifest, actor, args.reason, 0)
    state, target = orchestrator_state(run_dir, manifest)
    if target is not None and signal_verified(target):
        document.update(action="signalled", signalled_pid=target[0])
        message = (
            f"run {run_id}: cancel requested by {actor}; signalled its orchestrator "
            f"(pid {target[0]})"
        )
    elif state in ("gone", "alive") and _finish(workspace, settings, run_dir, task_id):
        # "alive" until a moment ago: its driver is gone now (a new driver keeps its lock)
        document["action"] = "finished"
        message = f"run {run_id}: its orchestrator was gone; cancel finished it as cancelled"
    else:
        document["action"] = "requested"
        where = (
            f"on host {manifest.get('host')!r}"
            if state == "elsewhere"
            else "by a process that cannot be verified"
        )
        message = (
            f"run {run_id}: cancel request recorded, but the run is driven {where}; it was not "
            "signalled from here: cancel it where it runs"
        )
    if args.wait and document["action"] == "signalled":
        _wait(workspace, settings, run_dir, settings.kill_grace_seconds + WAIT_SLACK_SECONDS)
    code = _report(workspace, reporter, run_dir, document, message)
    if document["action"] == "requested" or (args.wait and not document["ended"]):
        return EXIT_FAILED
    return code


def orchestrator_state(
    run_dir: Path, manifest: dict[str, Any]
) -> tuple[str, tuple[int, int] | None]:
    """Who drives the run, judged by its driver lock (see docs/run-control.md):

    ``alive`` with the (pid, start ticks) to signal (the lock is held and its holder's pid, start time and
    host match a live process here), ``gone`` (nobody holds the lock: the kernel released it
    when the driver died), ``elsewhere`` (held from another host) or ``unverified`` (held, but
    the holder cannot be verified: never signalled). Runs recorded before driver locks are
    judged by their recorded pid, start time and host.
    """
    driver = run_driver(run_dir)
    if driver.alive:
        if driver.verified and driver.pid is not None and driver.start_ticks is not None:
            return "alive", (driver.pid, driver.start_ticks)
        if driver.host not in (None, host_name()):
            return "elsewhere", None
        return "unverified", None
    if (run_dir / DRIVER_LOCK_NAME).exists():
        return "gone", None
    pid = checked_pid(manifest.get("orchestrator_pid"))
    ticks = manifest.get("orchestrator_start_ticks")
    if manifest.get("host") not in (None, host_name()):
        from codex_orchestrator.liveness import assess

        return ("gone" if assess(run_dir, manifest).stale else "elsewhere"), None
    if pid is not None and isinstance(ticks, int) and running_with_ticks(pid, ticks):
        return "alive", (pid, ticks)
    return "gone", None


def signal_verified(target: tuple[int, int], signum: int = signal.SIGTERM) -> bool:
    """Signal a process only if it is still the one verified: through a pidfd opened before the
    final check, so the pid cannot be reused between the check and the signal (Linux >= 5.3).
    False when it is gone or no longer matches."""
    pid, ticks = target
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not running_with_ticks(pid, ticks):
            return False
        signal.pidfd_send_signal(fd, signum)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def running_with_ticks(pid: int, ticks: int) -> bool:
    """True when ``pid`` is a live (not zombie) process that started at ``ticks``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != b"Z" and fields[19:20] == [str(ticks).encode()]


def _request_children(
    workspace: Workspace,
    task_id: str,
    manifest: dict[str, Any],
    actor: str,
    reason: str | None,
    depth: int,
) -> list[str]:
    """Record the request in every unfinished child run too (they end with their parent)."""
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
        write_request(child_dir, actor, reason)
        requested.append(child)
        requested += _request_children(workspace, task_id, child_manifest, actor, reason, depth + 1)
        _, target = orchestrator_state(child_dir, child_manifest)
        if target is not None and target[0] != manifest.get("orchestrator_pid"):
            signal_verified(target)  # a child driven by a process of its own
    return requested


def _wait(workspace: Workspace, settings: Settings, run_dir: Path, seconds: float) -> None:
    """Wait for the run to be recorded as ended; finish it here if its orchestrator dies
    without recording the end (it was already dying when signalled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        manifest = read_manifest(run_dir)
        if manifest is not None and manifest["status"] in TERMINAL_RUN_STATUSES:
            return
        if manifest is not None and orchestrator_state(run_dir, manifest)[0] == "gone":
            time.sleep(0.5)  # its final records may be landing right now
            if (read_manifest(run_dir) or manifest)["status"] not in TERMINAL_RUN_STATUSES:
                _finish(workspace, settings, run_dir, str(manifest["task_id"]))
            return
        time.sleep(0.05)


def _finish(workspace: Workspace, settings: Settings, run_dir: Path, task_id: str) -> bool:
    """Finish a run whose driver is dead as cancelled; False when someone drives it now."""
    from codex_orchestrator.finishing import finish_dead_run

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
    if document["ended"] and document["action"] != "already-ended":
        message += f"\nrun {document['run_id']} is now {manifest['status']}"
    reporter.result(document, message)
    return EXIT_OK


def _manifest(workspace: Workspace, run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST_NAME
    return load_manifest(path, workspace.display(path))
