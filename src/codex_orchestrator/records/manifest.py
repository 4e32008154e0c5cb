"""The run manifest (version 1): its shape, and the one writer that persists it.

`ManifestStore` owns a run's manifest while the run is in progress. Every write goes through
it under one lock (the heartbeat thread and the main flow never write at once), each write is
atomic, and the time of the last write of any kind is kept so the heartbeat can throttle.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codex_orchestrator.errors import CorruptManifestError, RunNotFoundError
from codex_orchestrator.records.driver import DriverLock
from codex_orchestrator.records.statuses import RunStatus, StageStatus
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.console import note
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.jsonio import atomic_write_bytes, atomic_write_json
from codex_orchestrator.util.safefs import RECORD_SIZE_LIMIT, open_no_follow, read_regular

if TYPE_CHECKING:
    from codex_orchestrator.records.workspace import Workspace

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
HEARTBEAT_NAME = ".heartbeat"
RESUME_TOKEN_NAME = ".resume-token"
EVENTS_NAME = "runner.ndjson"
RUN_SUMMARY_NAME = "run-summary.json"
RUNNER_NAME = "codex-orchestrator"
#: How many levels of child runs (``child_runs``, ``sub_run_id``) a reader follows below a run:
#: cancel, logs, the report and JUnit alike. Sub-pipelines cannot form a cycle, so only a
#: tampered manifest can link deeper; the bound keeps such a loop finite.
MAX_CHILD_DEPTH = 16
#: The most of a run's time that deferred (stage-transition) manifest writes may take.
WRITE_SHARE = 0.1
#: The manifest fields that say what a run is and how it ended (status and run-summary reports).
OUTCOME_FIELDS = (
    "run_id",
    "task_id",
    "pipeline_id",
    "status",
    "status_detail",
    "exit_code",
    "started_at",
    "completed_at",
    "summary",
)


def command_entry(
    index: int, stage_id: str, title: str, kind: str, command: str | None
) -> dict[str, Any]:
    """A fresh ``commands[]`` entry for stage number ``index`` (1-based)."""
    return {
        "index": index,
        "id": stage_id,
        "title": title,
        "command": command,
        "kind": kind,
        "status": StageStatus.PENDING,
        "started_at": None,
        "completed_at": None,
        "exit_code": None,
        "summary": None,
        "log_path": None,
        "error_file": None,
        "sub_run_id": None,
    }


def load_manifest(path: Path, shown: str | None = None) -> dict[str, Any]:
    """Read a manifest; a corrupt one is left untouched and reported as `CorruptManifestError`.

    ``shown`` is how messages name the file (default: the path as given).
    """
    name = shown or str(path)
    return parse_manifest(read_manifest_bytes(path, name), name)


def read_manifest_bytes(path: Path, shown: str) -> bytes:
    """The bytes of a manifest, read once and never through a link (`CorruptManifestError`
    when it cannot be read), for a reader that serves what it checked (`parse_manifest`)."""
    try:
        return read_regular(path, RECORD_SIZE_LIMIT, follow_links=False)
    except FileNotFoundError:
        raise CorruptManifestError(
            f"{shown}: manifest is missing; the run directory is incomplete"
        ) from None
    except OSError as error:
        raise _unparsable(shown, error) from None


def parse_manifest(data: bytes, shown: str) -> dict[str, Any]:
    """A manifest's bytes as a checked manifest; `CorruptManifestError` naming ``shown``."""
    try:
        document = json.loads(data)
    except RecursionError:
        raise _unparsable(shown, ValueError("JSON nested too deeply to parse")) from None
    except ValueError as error:
        raise _unparsable(shown, error) from None
    problem = manifest_problem(document)
    if problem is not None:
        raise CorruptManifestError(
            f"{shown}: not a valid run manifest ({problem}); it was left untouched"
        )
    manifest: dict[str, Any] = document
    return manifest


def _unparsable(shown: str, error: Exception) -> CorruptManifestError:
    return CorruptManifestError(
        f"{shown}: manifest cannot be parsed ({_first_line(error)}); it was left untouched — "
        "inspect or restore it by hand"
    )


def load_child_manifest(
    workspace: Workspace, child: str, task_id: str, skipped: str
) -> tuple[Path, dict[str, Any]] | None:
    """The directory and manifest of child run ``child`` of task ``task_id``.

    None when the child run is gone, or its manifest is unreadable: then a warning says so,
    ending with ``skipped`` (what the caller leaves out for it). Raises InvalidIdError when
    ``child`` is not a valid run id.
    """
    found = workspace.find_run(validate_id(child, "run"), task_id)
    if found is None:
        return None
    try:
        return found[1], load_manifest(found[1] / MANIFEST_NAME)
    except RunNotFoundError:
        return None
    except Exception:  # an unreadable child must not stop what the caller does with the parent
        note(f"warning: child run {child}: manifest unreadable; {skipped}")
        return None


_REQUIRED_TEXT = ("run_id", "task_id", "pipeline_id", "status", "started_at")
_REQUIRED_COMMAND_FIELDS = (("index", int), ("id", str), ("status", str))


def manifest_problem(data: Any) -> str | None:
    """Why ``data`` is not a usable version-1 manifest, or None when it is."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for key in _REQUIRED_TEXT:
        if not isinstance(data.get(key), str):
            return f"field {key!r} is missing or not a string"
    if data["status"] not in set(RunStatus):
        return f"unknown status {data['status']!r}"
    commands = data.get("commands")
    if not isinstance(commands, list):
        return "field 'commands' is missing or not a list"
    for position, command in enumerate(commands):
        if not isinstance(command, dict):
            return f"commands[{position}] is not an object"
        for key, kind in _REQUIRED_COMMAND_FIELDS:
            if not isinstance(command.get(key), kind):
                return f"commands[{position}].{key} is missing or of the wrong type"
    for key in ("resume_events", "child_runs"):
        if not isinstance(data.get(key, []), list):
            return f"field {key!r} is not a list"
    return None


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class ManifestStore:
    """Holds a run's manifest in memory and persists it atomically, one writer at a time."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.path = run_dir / MANIFEST_NAME
        self.heartbeat_path = run_dir / HEARTBEAT_NAME
        self.data = data
        self.lock = threading.RLock()
        self.last_write = 0.0
        self.last_cost = 0.0
        self.dirty = False
        self.writes = 0
        self.driver: DriverLock | None = None
        #: Called when a transition write is deferred (the heartbeat wakes up to flush it).
        self.on_deferred: Callable[[], None] | None = None

    def persist(self, *, durable: bool = False) -> None:
        """Write the manifest now (a forced flush).

        In-progress writes are compact (fast, and rewritten many times); ``durable`` writes — the
        terminal and resume records people read — are indented and fsynced.
        """
        with self.lock:
            began = time.monotonic()
            self.data["updated_at"] = iso_utc()
            atomic_write_json(self.path, self.data, durable=durable, pretty=durable)
            self.last_write = time.monotonic()
            self.last_cost = self.last_write - began
            self.dirty = False
            self.writes += 1

    def persist_transition(self) -> None:
        """Record a stage transition: write now, unless writes would take more than
        `WRITE_SHARE` of the time; then the write is deferred to the next transition or
        heartbeat that falls outside that budget.

        A write costs time in proportion to the manifest's size, so writing at every
        transition of an N-stage pipeline costs O(N) per stage; this budget keeps the cost per
        stage O(1) amortised. Every transition is in ``runner.ndjson`` at once meanwhile, and
        run status changes and the terminal record are always written at once.
        """
        with self.lock:
            already_deferred, self.dirty = self.dirty, True
            if self._write_allowed():
                self.persist()
                return
        if not already_deferred and self.on_deferred is not None:
            self.on_deferred()  # one wake-up per deferred write, not one per transition

    def flush_due_in(self) -> float | None:
        """Seconds until a deferred transition may be written; None when none is pending."""
        with self.lock:
            if not self.dirty:
                return None
            due = self.last_write + self.last_cost / WRITE_SHARE
            return max(0.0, due - time.monotonic())

    def flush_if_due(self) -> bool:
        """Write a deferred transition once the write budget allows; True when written."""
        with self.lock:
            if self.dirty and self._write_allowed():
                self.persist()
                return True
            return False

    def flush(self) -> None:
        """Write a deferred transition now (a no-op when nothing is pending)."""
        with self.lock:
            if self.dirty:
                self.persist()

    def _write_allowed(self) -> bool:
        return time.monotonic() - self.last_write >= self.last_cost / WRITE_SHARE

    def beat(self, throttle_seconds: float) -> bool:
        """One heartbeat: rewrite ``.heartbeat``; persist the manifest if the throttle allows.

        Returns True when the manifest was written. Raises OSError when a write fails.
        """
        with self.lock:
            now = iso_utc()
            self.data["heartbeat_at"] = now
            atomic_write_bytes(self.heartbeat_path, (now + "\n").encode("ascii"))
            if time.monotonic() - self.last_write >= throttle_seconds or (
                self.dirty and self._write_allowed()
            ):
                self.persist()
                return True
            return False

    def update(self, **fields: Any) -> None:
        """Set top-level manifest fields (not persisted until the next write)."""
        with self.lock:
            self.data.update(fields)

    def command(self, index: int) -> dict[str, Any]:
        """The ``commands[]`` entry of 1-based stage ``index``."""
        entry: dict[str, Any] = self.data["commands"][index - 1]
        return entry

    def update_command(self, index: int, **fields: Any) -> None:
        """Set fields of stage ``index``'s entry (not persisted until the next write)."""
        with self.lock:
            self.command(index).update(fields)

    def append(self, key: str, item: dict[str, Any]) -> None:
        """Append ``item`` to the list field ``key``."""
        with self.lock:
            self.data.setdefault(key, []).append(item)


def write_resume_token(run_dir: Path, token: str) -> None:
    """Write the only copy of the resume token, readable by its owner only (mode 0600)."""
    path = run_dir / RESUME_TOKEN_NAME
    fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (token + "\n").encode("ascii"))
    finally:
        os.close(fd)


def write_run_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``run-summary.json`` durably and return its path."""
    path = run_dir / RUN_SUMMARY_NAME
    atomic_write_json(path, summary, durable=True)
    return path
