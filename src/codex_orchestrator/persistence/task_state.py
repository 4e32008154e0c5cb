"""Per-task run history: the writer of ``<out>/<task>/state.json``, its archive and its pending
snapshots. Their format (names, parsing, validation) and the read-only reader live in
`state_format`; this module adds the lock, the merge, the archiving and the repair.

Files (all beside ``state.json``, in ``<out>/<task>/``):

- ``state.json``: ``{"taskId", "lastRunAt", "runs": [...]}``, one entry per run id (a newer
  snapshot of a run replaces the older one), sorted by completion time, one entry per line.
- ``state.archive.ndjson``: older entries, one JSON entry per line, appended, never rewritten.
  ``state.json`` keeps the newest ``KEEP_RECENT`` runs; once it holds more than
  ``KEEP_RECENT + ARCHIVE_BATCH``, the oldest are appended to the archive (one fsynced write)
  and then dropped from ``state.json``. A crash between the two steps can only repeat entries
  in the archive, never lose one.
- ``state.pending/<run-id>.<time>.json``: one durable snapshot per recorded run, written
  before the lock is taken, deleted once merged into ``state.json``. When the out root cannot
  take it (read-only, full), the snapshot goes to the fallback pending directory beside the
  run records instead, ``<runs>/<task>/state.pending/``; both directories are merged alike.
- ``.state.json.stamp``: size, CRC-32 of the entries, count and ``lastRunAt`` of the
  ``state.json`` this module last wrote. When it matches, a run newer than all others is
  appended to the existing bytes without re-parsing them, so recording stays cheap however long
  the history grows. Any other change to ``state.json`` fails the check and forces a full parse.

Zero lost snapshots. Every lock holder (writers and ``read``) merges all pending files present
while it holds the lock. After releasing, it lists the pending directory again and, if anything
is there, makes one non-blocking try to re-take the lock and merge (in a loop). When that try
fails, another process took the lock after our release, i.e. after any file we could have
missed was written, and it merges that file. A writer whose retries run out wrote its pending
file before its last failed try, so the holder at that moment sees the file in its
post-release check. Only a holder killed outright leaves files behind; the next writer or
reader of the task merges them.

Pruned runs. ``prune`` marks the entries of the runs it deletes ``"pruned": true`` through
`mark_pruned`, under the lock, after merging every pending snapshot. A mark is sticky: a
snapshot of the same run merged later keeps it, so a run's own late snapshot (or one waiting in
the fallback directory) can never undo it.

Corruption. A ``state.json`` or pending file that does not parse, or has the wrong shape, is
never overwritten: it is renamed aside (``<name>.corrupt-<time>``), reported once through
``warn``, and a fresh history is started with every entry that can still be recovered.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from codex_orchestrator.persistence.state_format import (
    CorruptStateError,
    Entry,
    TaskStateFiles,
    parse_entry,
    parse_state,
    pruned,
    read_record,
)
from codex_orchestrator.persistence.state_format import run_id_of as _run_id
from codex_orchestrator.persistence.state_format import timestamp_of as _timestamp
from codex_orchestrator.records.layout import PENDING_DIR_NAME
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.jsonio import (
    append_line,
    atomic_write_bytes,
    encode_record,
    json_text,
    quarantine,
    read_json,
)
from codex_orchestrator.util.locks import FileLock
from codex_orchestrator.util.safefs import (
    RECORD_SIZE_LIMIT,
    read_regular,
    real_directory,
    remove_file,
)

if TYPE_CHECKING:
    from codex_orchestrator.records.workspace import Settings, Workspace

KEEP_RECENT = 1000
ARCHIVE_BATCH = 250
_SEPARATOR = b",\n"
_TRAILER = b"\n]}\n"


class RunRecord(NamedTuple):
    """One finished run as listed in ``state.json``."""

    task_id: str
    run_id: str
    pipeline_id: str
    status: str
    timestamp: str  # completion time, ISO-8601 UTC with milliseconds
    manifest: str  # manifest path as displayed (relative to the repo root when inside it)
    started_at: str | None = None  # lets `runs` list durations without reading manifests
    status_detail: str | None = None  # lets `runs` name the failed stage likewise
    duration_seconds: float | None = None  # and show the duration

    def to_json(self) -> Entry:
        """The ``state.json`` entry of this run."""
        entry: Entry = {
            "taskId": self.task_id,
            "runId": self.run_id,
            "pipelineId": self.pipeline_id,
            "status": self.status,
            "timestamp": self.timestamp,
            "manifest": self.manifest,
        }
        if self.started_at is not None:
            entry["startedAt"] = self.started_at
        if self.status_detail is not None:
            entry["statusDetail"] = self.status_detail
        if self.duration_seconds is not None:
            entry["durationSeconds"] = self.duration_seconds
        return entry


class _Verified(NamedTuple):
    """The entries of a ``state.json`` vouched for by the stamp, as raw bytes."""

    body: bytes
    crc: int
    entries: int
    last_run_at: str | None


class TaskStateStore:
    """Per-task run history at ``<out>/<task>/state.json`` (see the module docstring)."""

    def __init__(
        self,
        state_dir: Path,
        lock_path: Path,
        task_id: str,
        lock: FileLock | None = None,
        warn: Callable[[str], None] | None = None,
        *,
        keep_recent: int = KEEP_RECENT,
        archive_batch: int = ARCHIVE_BATCH,
    ) -> None:
        self.task_id = task_id
        # ``<runs>/<task>.lock`` sits beside ``<runs>/<task>/``, which holds the run records.
        self.files = TaskStateFiles(state_dir, lock_path.parent / task_id / PENDING_DIR_NAME)
        self.state_path = self.files.state_path
        self.archive_path = self.files.archive_path
        self.pending_dir = self.files.pending_dir
        self.fallback_pending_dir = self.files.fallback_pending_dir
        self.lock_path = lock_path
        self._stamp_path = self.files.stamp_path
        self._lock = lock or FileLock(lock_path)
        self._warn = warn or _print_warning
        self._keep_recent = keep_recent
        self._archive_batch = archive_batch

    @classmethod
    def for_task(
        cls, workspace: Workspace, settings: Settings, task_id: str, warn: Callable[[str], None]
    ) -> TaskStateStore:
        """The store of ``task_id``, its lock retrying as the ``lock_*`` settings say."""
        return cls(
            workspace.state_dir(task_id),
            workspace.state_lock_path(task_id),
            task_id,
            lock=FileLock.from_settings(workspace.state_lock_path(task_id), settings),
            warn=warn,
        )

    def pending_path(self, record: RunRecord) -> Path:
        """Where ``record`` waits until it is merged into ``state.json``."""
        stamp = re.sub(r"[^0-9A-Za-z]", "", record.timestamp)[:32]
        return self.pending_dir / f"{validate_id(record.run_id, 'run')}.{stamp}.json"

    def record(self, record: RunRecord) -> None:
        """Save ``record`` durably as pending, then merge every pending snapshot under the lock.

        Raises `LockTimeoutError` when the lock bound is spent, OSError when ``state.json``
        cannot be written; the snapshot stays pending (see `saved_snapshot`) and is merged by
        the current lock holder or the next writer of the task.
        """
        payload = _encode(record.to_json())
        try:
            real_directory(self.pending_dir)
            atomic_write_bytes(self.pending_path(record), payload, durable=True)
        except OSError:
            # The out root is read-only or full: a snapshot must never be lost, so it waits
            # beside the run records (which the run could write) until a merge can take it.
            # When this write fails too, the error propagates: nothing could be saved.
            fallback = real_directory(self.fallback_pending_dir) / self.pending_path(record).name
            atomic_write_bytes(fallback, payload, durable=True)
        self._lock.acquire()
        self._merge_and_release()

    def saved_snapshot(self, record: RunRecord) -> Path | None:
        """Where ``record``'s pending snapshot waits, or None when there is none."""
        name = self.pending_path(record).name
        candidates = (self.pending_dir / name, self.fallback_pending_dir / name)
        return next((path for path in candidates if path.exists()), None)

    def read(self) -> dict[str, Any]:
        """The state document; pending snapshots are merged first when the lock is free."""
        if not self._lock.try_acquire():
            return self._document(self._peek_runs())
        try:
            runs = self._sync_locked()
        finally:
            self._lock.release()
        self._drain()
        return self._document(runs)

    def mark_pruned(self, runs: list[Entry]) -> None:
        """Mark these runs ``"pruned": true``, under the lock, once every pending snapshot is
        merged: the current entry of each run is marked, else ``runs``' entry is added marked.

        Raises `LockTimeoutError` when the lock bound is spent: nothing is marked then.
        """
        self._lock.acquire()
        try:
            paths, incoming = self._load_pending()
            self._merge_full(self._load_verified(), incoming, runs)
            _unlink_all(paths)
        finally:
            self._lock.release()
        self._drain()

    # --- holding the lock -------------------------------------------------------------------

    def _merge_and_release(self) -> int:
        """Merge pending while holding the lock, release it, then drain (see module doc)."""
        try:
            merged = self._merge_pending_locked()
        finally:
            self._lock.release()
        return merged + self._drain()

    def _drain(self) -> int:
        """After a release, merge what is still pending unless another process took the lock."""
        merged = 0
        # Why this loop closes the gap: a writer that failed to get the lock wrote its pending
        # file *before* that failed try, i.e. while we held the lock. Listing again after our
        # release therefore sees it. If our non-blocking try fails, someone took the lock after
        # our release, hence after the file was written, and that holder merges it (and drains
        # in turn). A blocking acquire here could wait on a long merge for nothing.
        while self.files.pending_files() and self._lock.try_acquire():
            try:
                merged += self._merge_pending_locked()
            finally:
                self._lock.release()
        return merged

    def _merge_pending_locked(self) -> int:
        paths, incoming = self._load_pending()
        if incoming:
            verified = self._load_verified()
            if verified is None or not self._append(verified, incoming):
                self._merge_full(verified, incoming)
        # Only now, with state.json durably written, may the pending files go: a crash before
        # this line leaves them to be merged again, which is harmless (a snapshot of a run
        # replaces the older one of the same run; identical entries change nothing).
        _unlink_all(paths)
        return len(paths)

    def _sync_locked(self) -> list[Entry]:
        """Load (repairing corruption), merge pending, write if anything changed."""
        paths, incoming = self._load_pending()
        history = self._merge_full(self._load_verified(), incoming)
        _unlink_all(paths)
        return history.runs

    def _append(self, verified: _Verified, incoming: list[Entry]) -> bool:
        """Append runs newer than all others to the verified bytes; False when not possible.

        The fast path of the common case (a new run, the newest so far): the stamp proved the
        bytes are the ones this module wrote (size and CRC-32), so they are reused unparsed and
        the CRC is extended over the new tail only. Each guard below sends a case that would
        need reordering, replacing or archiving to the full merge instead.
        """
        if verified.entries + len(incoming) > self._keep_recent + self._archive_batch:
            return False
        if verified.last_run_at is not None and _timestamp(incoming[0]) < verified.last_run_at:
            return False
        run_ids = {_run_id(entry) for entry in incoming}
        # A run already listed must be replaced in place, not listed twice. The byte search is
        # exact: entries are written compactly by this module and quotes inside values are
        # escaped, so ``"runId":"<id>"`` is present precisely when the run is.
        if len(run_ids) < len(incoming) or any(_run_id_key(r) in verified.body for r in run_ids):
            return False
        tail = (_SEPARATOR if verified.body else b"") + _join_entries(incoming)
        self._write_state(
            verified.body + tail,
            last_run_at=_timestamp(incoming[-1]),
            count=verified.entries + len(incoming),
            crc=zlib.crc32(tail, verified.crc),
        )
        return True

    def _merge_full(
        self, verified: _Verified | None, incoming: list[Entry], pruned: list[Entry] | None = None
    ) -> _History:
        """Merge into the parsed history (then mark ``pruned``), archive the oldest runs if
        due, write if changed."""
        history, repaired = self._load_history(verified)
        changed = history.merge(incoming)
        changed = history.mark_pruned(pruned or []) or changed
        if changed or repaired:
            excess = len(history.runs) - self._keep_recent
            if excess > self._archive_batch:
                append_line(self.archive_path, history.pop_oldest(excess).decode(), durable=True)
            body = history.encode()
            self._write_state(body, last_run_at=history.last_run_at, count=len(history.runs))
        return history

    def _load_verified(self) -> _Verified | None:
        """The entries of ``state.json`` as bytes, when the stamp vouches for them."""
        try:
            stamp = read_json(self._stamp_path)
            raw = read_regular(self.state_path, RECORD_SIZE_LIMIT, follow_links=False)
        except (OSError, ValueError):
            return None
        if not isinstance(stamp, dict) or not isinstance(stamp.get("count"), int):
            return None
        last_run_at = stamp.get("lastRunAt")
        if not isinstance(last_run_at, str | None):
            return None
        header = _header(self.task_id, last_run_at)
        if (
            stamp.get("size") != len(raw)
            or not raw.startswith(header)
            or not raw.endswith(_TRAILER)
        ):
            return None
        body = raw[len(header) : len(raw) - len(_TRAILER)]
        crc = zlib.crc32(body)
        if stamp.get("crc") != crc:
            return None
        return _Verified(body, crc, stamp["count"], last_run_at)

    def _write_state(
        self, body: bytes, *, last_run_at: str | None, count: int, crc: int | None = None
    ) -> None:
        """Write ``state.json`` durably, then the stamp that vouches for it."""
        content = _header(self.task_id, last_run_at) + body + _TRAILER
        real_directory(self.state_path.parent)
        atomic_write_bytes(self.state_path, content, durable=True)
        stamp = {
            "size": len(content),
            "crc": zlib.crc32(body) if crc is None else crc,
            "count": count,
            "lastRunAt": last_run_at,
        }
        atomic_write_bytes(self._stamp_path, _encode(stamp))

    def _load_history(self, verified: _Verified | None) -> tuple[_History, bool]:
        """The parsed history; True with it when a corrupt ``state.json`` was set aside."""
        if verified is not None:
            return _History.from_body(verified.body), False
        try:
            return _History(parse_state(read_record(self.state_path))), False
        except FileNotFoundError:
            return _History([]), False
        except CorruptStateError as problem:
            kept = quarantine(self.state_path)
            salvaged = len(problem.recovered)
            self._warn(
                f"warning: state.json for task {self.task_id} was corrupt ({problem}); "
                f"kept aside as {kept}; starting a fresh history"
                + (f" with the {salvaged} readable runs" if salvaged else "")
            )
            return _History(problem.recovered), True

    def _load_pending(self) -> tuple[list[Path], list[Entry]]:
        """Every pending file and the valid snapshots among them, oldest first."""
        paths = self.files.pending_files()
        entries: list[Entry] = []
        for path in paths:
            try:
                entries.append(parse_entry(read_record(path)))
            except FileNotFoundError:
                continue
            except CorruptStateError as problem:
                kept = quarantine(path)
                self._warn(
                    f"warning: pending state snapshot {path.name} for task {self.task_id} "
                    f"was corrupt ({problem}); kept aside as {kept}; skipped"
                )
        entries.sort(key=_timestamp)
        return paths, entries

    # --- without the lock -------------------------------------------------------------------

    def _peek_runs(self) -> list[Entry]:
        """The runs in ``state.json``, repairing nothing (another process holds the lock)."""
        try:
            return parse_state(read_record(self.state_path))
        except FileNotFoundError:
            return []
        except CorruptStateError as problem:
            return problem.recovered

    def _document(self, runs: list[Entry]) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "lastRunAt": _timestamp(runs[-1]) if runs else None,
            "runs": runs,
        }


class _History:
    """Runs sorted by completion time, with the encoded bytes of those read unchanged."""

    def __init__(self, runs: list[Entry], lines: dict[str, bytes] | None = None) -> None:
        self.runs = runs
        self._lines = lines or {}

    @classmethod
    def from_body(cls, body: bytes) -> _History:
        """The history of verified ``state.json`` entries (one per line, as written)."""
        runs: list[Entry] = json.loads(b"[" + body + b"]")
        lines = body.split(_SEPARATOR) if body else []
        if len(lines) != len(runs):
            return cls(runs)
        return cls(runs, {_run_id(entry): line for entry, line in zip(runs, lines, strict=True)})

    @property
    def last_run_at(self) -> str | None:
        return _timestamp(self.runs[-1]) if self.runs else None

    def merge(self, incoming: list[Entry]) -> bool:
        """Merge ``incoming`` (oldest first); True when the history changed.

        A snapshot replaces the entry of the same run unless it is older; a pruned run's entry
        stays marked pruned (its directory is gone; see the module docstring).
        """
        position = {_run_id(entry): index for index, entry in enumerate(self.runs)}
        changed = needs_sort = False
        for entry in incoming:
            index = position.get(_run_id(entry))
            if index is not None and self.runs[index].get("pruned") is True:
                entry = {**entry, "pruned": True}
            if index is None:
                last = self.runs[-1] if self.runs else None
                needs_sort = needs_sort or (
                    last is not None and _timestamp(entry) < _timestamp(last)
                )
                position[_run_id(entry)] = len(self.runs)
                self.runs.append(entry)
            elif _timestamp(entry) >= _timestamp(self.runs[index]) and entry != self.runs[index]:
                needs_sort = needs_sort or _timestamp(entry) != _timestamp(self.runs[index])
                self._lines.pop(_run_id(entry), None)
                self.runs[index] = entry
            else:
                continue
            changed = True
        if needs_sort:
            self.runs.sort(key=_timestamp)
        return changed

    def mark_pruned(self, runs: list[Entry]) -> bool:
        """Mark the entries of ``runs`` pruned (adding ``runs``' own entry for a run not
        listed); True when the history changed."""
        position = {_run_id(entry): index for index, entry in enumerate(self.runs)}
        unlisted = [pruned(entry) for entry in runs if _run_id(entry) not in position]
        changed = bool(unlisted)
        for entry in runs:
            index = position.get(_run_id(entry))
            if index is not None and self.runs[index].get("pruned") is not True:
                self._lines.pop(_run_id(entry), None)
                self.runs[index] = pruned(self.runs[index])
                changed = True
        if unlisted:
            self.runs = sorted([*self.runs, *unlisted], key=_timestamp)
        return changed

    def pop_oldest(self, count: int) -> bytes:
        """Remove the ``count`` oldest runs and return them as NDJSON lines."""
        oldest, self.runs = self.runs[:count], self.runs[count:]
        return b"\n".join(map(self._encoded, oldest))

    def encode(self) -> bytes:
        """The runs as ``state.json`` lists them, one per line."""
        return _SEPARATOR.join(map(self._encoded, self.runs))

    def _encoded(self, entry: Entry) -> bytes:
        return self._lines.get(_run_id(entry)) or _encode(entry)


def _encode(value: Any) -> bytes:
    return encode_record(json_text(value, pretty=False))


def _join_entries(entries: list[Entry]) -> bytes:
    return _SEPARATOR.join(_encode(entry) for entry in entries)


def _header(task_id: str, last_run_at: Any) -> bytes:
    return b'{"taskId":%s,"lastRunAt":%s,"runs":[\n' % (_encode(task_id), _encode(last_run_at))


def _run_id_key(run_id: str) -> bytes:
    """The exact bytes ``"runId":"<id>"`` that an entry of this run contains in ``state.json``."""
    return b'"runId":' + _encode(run_id)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            remove_file(path)


def _print_warning(message: str) -> None:
    print(message, file=sys.stderr)
