"""The run manifest (version 1): its shape, and the one writer that persists it.

`ManifestStore` owns a run's manifest while the run is in progress. Every write goes through
it under one lock (the heartbeat thread and the main flow never write at once), each write is
atomic, and the time of the last write of any kind is kept so the heartbeat can throttle.
"""

# No `from __future__ import annotations` here: it would make every TypedDict field below a
# string that typing compiles into a ForwardRef at import (about 120 of them, ~2 ms of the
# cold start of every command that reads a manifest). Names known only to the type checker
# are quoted instead.

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, Required, TypedDict, cast

from codex_orchestrator.errors import CorruptManifestError, RunNotFoundError
from codex_orchestrator.records.driver import DriverLock, driver_identity
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.statuses import RunStatus, StageStatus
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.console import note
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.jsonio import atomic_write_bytes, atomic_write_json
from codex_orchestrator.util.safefs import RECORD_SIZE_LIMIT, open_no_follow, read_regular

if TYPE_CHECKING:
    from codex_orchestrator.records.workspace import Workspace

MANIFEST_VERSION = 1
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


class Handle(TypedDict, total=False):
    """A stage's handle: the JSON description of a running stage that its executor reported,
    meaningful only to that executor (``kind``). Local stages have ``host``, ``pid``, ``pgid``,
    ``pid_start_ticks`` and ``env_marker``; Dask stages name their worker and scheduler too."""

    kind: Required[str]
    host: str
    pid: int
    pgid: int
    pid_start_ticks: int | None
    env_marker: str
    worker: str
    scheduler: str
    worker_pid: int
    start_ticks: int  # pid_start_ticks, as Dask handles of earlier runs named it (still read)
    stage_mark: str
    remote_end: str
    remote_ends_by: str


class AttemptRecord(TypedDict):
    """One ``attempt_history`` item: how one attempt of a retrying stage went, and its logs."""

    attempt: int
    exit_code: int | None
    timed_out: bool
    cancelled: bool
    started_at: str | None
    completed_at: str
    duration_seconds: float
    log_path: str | None
    stderr_log_path: str | None


class StageEntry(TypedDict):
    """One ``commands[]`` entry: a stage of the run, in config order (docs/run-records.md).

    The first fields are in every entry from the start; the others appear as the stage runs.
    The scalar fields of the stage's handle (``host``, ``pid``, ...) are also copied onto the
    entry, where readers of earlier records look for them.
    """

    index: int
    id: str
    title: str
    command: str | None
    kind: str
    status: str
    started_at: str | None
    completed_at: str | None
    exit_code: int | None
    summary: str | None
    log_path: str | None
    error_file: str | None
    sub_run_id: str | None
    needs: NotRequired[list[str]]
    attempts: NotRequired[int]
    stderr_log_path: NotRequired[str | None]
    handle: NotRequired[Handle | None]
    skip_reason: NotRequired[str | None]
    duration_seconds: NotRequired[float]
    stdout_bytes: NotRequired[int]
    stderr_bytes: NotRequired[int]
    timed_out: NotRequired[bool]
    host: NotRequired[str | None]
    pid: NotRequired[int | None]
    pgid: NotRequired[int | None]
    pid_start_ticks: NotRequired[int | None]
    env_marker: NotRequired[str | None]
    worker: NotRequired[str | None]
    scheduler: NotRequired[str | None]
    worker_pid: NotRequired[int | None]
    start_ticks: NotRequired[int | None]
    stage_mark: NotRequired[str | None]
    attempt_history: NotRequired[list[AttemptRecord]]
    cache: NotRequired[dict[str, Any]]


class StageEnding(TypedDict, total=False):
    """What is known of how a stage ended besides its status and summary (`end_stage`), in
    the order the fields are written."""

    error_file: str | None
    exit_code: int | None
    duration_seconds: float
    stdout_bytes: int
    stderr_bytes: int
    timed_out: bool
    host: str | None
    skip_reason: str


_ENDING_ORDER = tuple(StageEnding.__annotations__)


class ResumeEvent(TypedDict):
    """One ``resume_events`` item."""

    timestamp: str
    actor: str
    reason: str | None
    outcome: str


class CancelEvent(TypedDict):
    """One ``cancel_events`` item: a ``cancel`` request the run's end honoured."""

    timestamp: str
    actor: str | None
    reason: str | None
    recorded_at: str


class ChildRunLink(TypedDict):
    """One ``child_runs`` item: a child run a subpipeline stage started."""

    run_id: str
    pipeline_id: str
    stage_id: str
    status: str
    manifest: str


class Manifest(TypedDict):
    """A run's ``manifest.json`` (version 1), in the order its fields are written.

    A manifest read from disk is only checked for the fields `manifest_problem` names; readers
    of any other field of a manifest they did not write use ``.get``.
    """

    version: int
    task_id: str
    task_slug: str
    run_id: str
    parent_run_id: str | None
    pipeline_id: str
    pipeline_title: str | None
    pipeline_source: str
    runner: str
    executor: str
    executor_options: dict[str, Any]
    approval_policy: str | None
    only: NotRequired[list[str]]
    args: NotRequired[list[str]]
    status: str
    status_detail: str | None
    exit_code: int | None
    started_at: str
    completed_at: str | None
    updated_at: str
    heartbeat_at: str
    heartbeat_interval_seconds: float
    heartbeat_stale_after_seconds: float
    artifact_root: str
    log_path: str
    summary: str | None
    metrics_recorded: bool
    resume_token: str
    resume_events: list[ResumeEvent]
    approvals: list[Any]
    commands: list[StageEntry]
    child_runs: list[ChildRunLink]
    run_summary_path: str | None
    host: NotRequired[str]
    orchestrator_pid: NotRequired[int]
    orchestrator_start_ticks: NotRequired[int | None]
    duration_seconds: NotRequired[float]
    cancel_events: NotRequired[list[CancelEvent]]
    reviews: NotRequired[list[dict[str, Any]]]


def command_entry(
    index: int, stage_id: str, title: str, kind: str, command: str | None
) -> StageEntry:
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


#: Stage-entry fields a handle's fields never overwrite when they are copied onto the entry.
HANDLE_RESERVED_FIELDS = frozenset(command_entry(0, "", "", "", None)) | {
    "handle",
    "attempts",
    "duration_seconds",
    "stdout_bytes",
    "stderr_bytes",
    "timed_out",
    "stderr_log_path",
}


def load_manifest(path: Path, shown: str | None = None) -> Manifest:
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


def parse_manifest(data: bytes, shown: str) -> Manifest:
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
    return cast(Manifest, document)


def _unparsable(shown: str, error: Exception) -> CorruptManifestError:
    return CorruptManifestError(
        f"{shown}: manifest cannot be parsed ({_first_line(error)}); it was left untouched — "
        "inspect or restore it by hand"
    )


def load_child_manifest(
    workspace: "Workspace", child: str, task_id: str, skipped: str
) -> tuple[Path, Manifest] | None:
    """The directory and manifest of child run ``child`` of task ``task_id``.

    None when the child run is gone, or its manifest is unreadable: then a warning says so,
    ending with ``skipped`` (what the caller leaves out for it). Raises InvalidIdError when
    ``child`` is not a valid run id.
    """
    found = workspace.find_run(validate_id(child, "run"), task_id)
    if found is None:
        return None
    try:
        return found[1], load_manifest(RunLayout(found[1]).manifest)
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

    def __init__(self, run_dir: Path, data: Manifest) -> None:
        self.run_dir = run_dir
        self.path = RunLayout(run_dir).manifest
        self.heartbeat_path = RunLayout(run_dir).heartbeat
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

    # The transitions below change the manifest in memory only (the caller persists). Each sets
    # its fields in one fixed order: a field new to the entry is appended where it is first set,
    # so the order is part of the bytes written (tests/records pins them).

    def start_driving(self, executor: str, executor_options: dict[str, Any]) -> None:
        """The run is in progress, driven by this process with ``executor``."""
        with self.lock:
            identity = driver_identity()
            self.data.update(
                {
                    "status": RunStatus.IN_PROGRESS,
                    "executor": executor,
                    "executor_options": executor_options,
                    "host": identity["host"],
                    "orchestrator_pid": identity["orchestrator_pid"],
                    "orchestrator_start_ticks": identity["orchestrator_start_ticks"],
                }
            )

    def reopen(self, heartbeat_interval: float, stale_after: float, event: ResumeEvent) -> None:
        """Queue an ended or dead run for another pass (``resume``), recording ``event``."""
        with self.lock:
            self.data.update(
                {
                    "status": RunStatus.QUEUED,
                    "status_detail": None,
                    "exit_code": None,
                    "completed_at": None,
                    "metrics_recorded": False,
                    "heartbeat_interval_seconds": heartbeat_interval,
                    "heartbeat_stale_after_seconds": stale_after,
                }
            )
            self.data.setdefault("resume_events", []).append(event)

    def add_child_run(self, link: ChildRunLink) -> None:
        """Link a child run (a subpipeline stage's)."""
        with self.lock:
            self.data.setdefault("child_runs", []).append(link)

    def command(self, index: int) -> StageEntry:
        """The ``commands[]`` entry of 1-based stage ``index``."""
        return self.data["commands"][index - 1]

    def begin_stage(self, index: int, attempts: int) -> StageEntry:
        """Stage ``index`` runs (attempt number ``attempts``); its previous ending is cleared."""
        with self.lock:
            entry = self.command(index)
            entry.update(
                {
                    "status": StageStatus.RUNNING,
                    "started_at": iso_utc(),
                    "completed_at": None,
                    "exit_code": None,
                    "summary": None,
                    "error_file": None,
                    "attempts": attempts,
                }
            )
            return entry

    def begin_command(self, index: int, attempts: int, log_path: str, stderr_log_path: str) -> None:
        """A command stage's attempt runs, logging to the paths given (as shown); the previous
        attempt's handle, and the fields copied from it, are cleared."""
        with self.lock:
            entry = self.begin_stage(index, attempts)
            entry["log_path"] = log_path
            entry["stderr_log_path"] = stderr_log_path
            previous = entry.get("handle")
            fields = cast(dict[str, Any], entry)  # a handle's fields are the executor's to name
            for key in previous or {}:
                if key != "kind" and key not in HANDLE_RESERVED_FIELDS:
                    fields[key] = None
            entry["handle"] = None

    def record_cache(self, index: int, field: Mapping[str, Any] | None) -> None:
        """What the stage cache did for stage ``index`` (`records.cache_field`); nothing for a
        stage without a cache (None)."""
        if field is not None:
            with self.lock:
                self.command(index)["cache"] = dict(field)

    def begin_child(self, index: int, child_run_id: str, child_manifest: str) -> None:
        """A subpipeline stage runs as child run ``child_run_id`` (its manifest, as shown)."""
        with self.lock:
            entry = self.begin_stage(index, self.attempts(index) + 1)
            entry["sub_run_id"] = child_run_id
            entry["log_path"] = child_manifest

    def attempts(self, index: int) -> int:
        """How many attempts stage ``index`` has recorded."""
        return int(self.command(index).get("attempts") or 0)

    def record_handle(self, index: int, handle: Mapping[str, Any]) -> None:
        """Store the executor's handle; its scalar fields are also copied onto the entry (for
        a local stage: ``host``, ``pid``, ``pgid``, ``pid_start_ticks``, ``env_marker``), where
        readers of earlier records look for them."""
        with self.lock:
            entry = self.command(index)
            entry["handle"] = cast(Handle, dict(handle))  # executors name its fields
            fields = cast(dict[str, Any], entry)  # a handle's fields are the executor's to name
            for key, value in handle.items():
                if key != "kind" and key not in HANDLE_RESERVED_FIELDS and _scalar(value):
                    fields[key] = value

    def add_attempt(self, index: int, attempt: AttemptRecord) -> None:
        """Append one attempt to stage ``index``'s ``attempt_history``."""
        with self.lock:
            self.command(index).setdefault("attempt_history", []).append(attempt)

    def note_retry(self, index: int, summary: str, exit_code: int | None) -> None:
        """Stage ``index``'s attempt failed and the stage waits for its next one."""
        with self.lock:
            self.command(index).update({"summary": summary, "exit_code": exit_code})

    def end_stage(
        self,
        index: int,
        status: StageStatus,
        summary: str,
        ending: StageEnding | None = None,
    ) -> StageEntry:
        """Stage ``index`` ended with ``status``; ``ending`` holds what else is known."""
        with self.lock:
            entry = self.command(index)
            entry.update({"status": status, "completed_at": iso_utc(), "summary": summary})
            given: Mapping[str, Any] = ending or {}
            fields = cast(dict[str, Any], entry)
            for key in _ENDING_ORDER:  # the declared order, whatever order ``ending`` has
                if key in given:
                    fields[key] = given[key]
            return entry

    def skip_stage(self, index: int, skip_reason: str, summary: str, completed_at: str) -> None:
        """Stage ``index`` will not run (``skip_reason``), and never started."""
        with self.lock:
            self.command(index).update(
                {
                    "status": StageStatus.SKIPPED,
                    "skip_reason": skip_reason,
                    "summary": summary,
                    "completed_at": completed_at,
                }
            )

    def fail_running_stages(self, summary: str) -> list[str]:
        """Fail every stage still running (the orchestrator itself failed); their ids."""
        failed = []
        with self.lock:
            for entry in self.data["commands"]:
                if entry["status"] == StageStatus.RUNNING:
                    entry.update({"status": StageStatus.FAILED, "summary": summary})
                    failed.append(entry["id"])
        return failed

    def reset_stage(self, index: int, title: str, command: str | None) -> None:
        """Stage ``index`` runs again on the next pass, as the config now defines it."""
        with self.lock:
            self.command(index).update(
                {
                    "status": StageStatus.PENDING,
                    "title": title,
                    "command": command,
                    "skip_reason": None,
                }
            )


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def write_resume_token(run_dir: Path, token: str) -> None:
    """Write the only copy of the resume token, readable by its owner only (mode 0600)."""
    path = RunLayout(run_dir).resume_token
    fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (token + "\n").encode("ascii"))
    finally:
        os.close(fd)


def write_run_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``run-summary.json`` durably and return its path."""
    path = RunLayout(run_dir).run_summary
    atomic_write_json(path, summary, durable=True)
    return path
