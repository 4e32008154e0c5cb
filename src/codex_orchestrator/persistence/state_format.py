"""The task-state format: ``state.json``, its archive and its pending snapshots, parsed and
validated here and nowhere else; and `TaskStateReader`, the read-only view for listings.

Where the files are (`TaskStateFiles`):

- ``<out>/<task>/state.json``: ``{"taskId", "lastRunAt", "runs": [...]}``, one entry per run;
- ``<out>/<task>/state.archive.ndjson``: older entries, one per line;
- ``<out>/<task>/state.pending/`` and, when the out root could not take a snapshot,
  ``<runs>/<task>/state.pending/``: ``<run-id>.<time>.json`` snapshots waiting to be merged;
- ``<out>/<task>/.state.json.stamp``: the writer's proof of the bytes it last wrote.

An entry is valid when it is an object whose `ENTRY_KEYS` are strings and whose ``runId`` is a
run id: one rule for the writer (`task_state.TaskStateStore`, which sets invalid files aside)
and for every reader (``runs``, ``prune``, ``report --task``, which skip what is invalid).
"""

# No `from __future__ import annotations` (docs/architecture.md, cold start): typing would
# compile each NamedTuple/TypedDict field written as a string into a ForwardRef at import.

import errno
import json
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NotRequired, TypedDict, cast

from codex_orchestrator.records.layout import PENDING_DIR_NAME
from codex_orchestrator.util.ids import RUN_ID_PATTERN
from codex_orchestrator.util.safefs import (
    RECORD_SIZE_LIMIT,
    UnreadableFileError,
    list_directory,
    read_regular,
)

if TYPE_CHECKING:
    from codex_orchestrator.records.workspace import Workspace

STATE_NAME = "state.json"
ARCHIVE_NAME = "state.archive.ndjson"
STAMP_NAME = ".state.json.stamp"
ENTRY_KEYS = ("taskId", "runId", "pipelineId", "status", "timestamp", "manifest")
#: The archive only grows (appended, never rewritten), so it gets a larger cap than a record.
ARCHIVE_SIZE_LIMIT = 256 * 1024 * 1024


class StateEntry(TypedDict):
    """One run in ``state.json``, the archive or a pending snapshot, in written order."""

    taskId: str
    runId: str
    pipelineId: str
    status: str
    timestamp: str
    manifest: str
    startedAt: NotRequired[str]
    statusDetail: NotRequired[str]
    durationSeconds: NotRequired[float]
    pruned: NotRequired[bool]


Entry = StateEntry
_BY_TIMESTAMP = itemgetter("timestamp")
_BY_RUN_ID = itemgetter("runId")
Warn = Callable[[str], None]


class CorruptStateError(ValueError):
    """A state file that does not parse or has the wrong shape; ``recovered`` holds the valid
    entries that survived."""

    def __init__(self, reason: str, recovered: list[Entry] | None = None) -> None:
        super().__init__(reason)
        self.recovered = recovered or []


class TaskStateFiles(NamedTuple):
    """The task-state files of one task."""

    state_dir: Path  # <out>/<task>
    fallback_pending_dir: Path  # <runs>/<task>/state.pending

    @classmethod
    def for_task(cls, workspace: "Workspace", task_id: str) -> "TaskStateFiles":
        """The files of ``task_id`` (its directories resolved as `Workspace` resolves them)."""
        return cls(
            workspace.state_dir(task_id), workspace.task_runs_dir(task_id) / PENDING_DIR_NAME
        )

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_NAME

    @property
    def archive_path(self) -> Path:
        return self.state_dir / ARCHIVE_NAME

    @property
    def pending_dir(self) -> Path:
        return self.state_dir / PENDING_DIR_NAME

    @property
    def stamp_path(self) -> Path:
        return self.state_dir / STAMP_NAME

    def pending_files(self) -> list[Path]:
        """Pending snapshots in both pending directories. A directory that is missing or a
        link is skipped (a link is refused: merged files are deleted, never outside the
        roots); any other error propagates."""
        paths: list[Path] = []
        for directory in (self.pending_dir, self.fallback_pending_dir):
            try:
                names = list_directory(directory)
            except OSError as error:
                if error.errno in (errno.ENOENT, errno.ELOOP):
                    continue
                raise
            paths += [
                directory / name
                for name in names
                if name.endswith(".json") and not name.startswith(".")
            ]
        return paths


def is_entry(value: Any) -> bool:
    """True when ``value`` is a valid history entry (see the module docstring)."""
    # Spelled out, with `type(...) is`, rather than a loop over `ENTRY_KEYS` with isinstance:
    # `runs` checks every entry of every listed task, and this is a third faster.
    if type(value) is not dict:
        return False
    get = value.get
    run_id = get("runId")
    return (
        type(run_id) is str
        and type(get("taskId")) is str
        and type(get("pipelineId")) is str
        and type(get("status")) is str
        and type(get("timestamp")) is str
        and type(get("manifest")) is str
        and RUN_ID_PATTERN.fullmatch(run_id) is not None
    )


def run_id_of(entry: Entry) -> str:
    return entry["runId"]


def timestamp_of(entry: Entry) -> str:
    """The run's completion time (entries sort by it)."""
    return entry["timestamp"]


def pruned(entry: Entry) -> Entry:
    """``entry`` marked pruned (a copy)."""
    marked = entry.copy()
    marked["pruned"] = True
    return marked


def keep_newer(entries: dict[str, Entry], entry: Entry) -> None:
    """Put ``entry`` in ``entries`` (by run id) unless an entry of the same run is newer."""
    current = entries.get(entry["runId"])
    if current is None or entry["timestamp"] >= current["timestamp"]:
        entries[entry["runId"]] = entry


def read_record(path: Path) -> bytes:
    """The bytes of ``state.json`` or a pending file; a link, FIFO or oversized file is
    corrupt. Raises FileNotFoundError when missing."""
    try:
        return read_regular(path, RECORD_SIZE_LIMIT, follow_links=False)
    except UnreadableFileError as problem:
        raise CorruptStateError(problem.reason) from None


def parse_state(raw: bytes) -> list[Entry]:
    """The runs of a ``state.json``, sorted by completion time, one per run (the newest).

    Raises `CorruptStateError` (with the valid entries that survived) when the document does
    not parse, has no ``runs`` list or holds an invalid entry.
    """
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise CorruptStateError(f"not JSON: {error}") from None
    runs = document.get("runs") if isinstance(document, dict) else None
    if not isinstance(runs, list):
        raise CorruptStateError('no "runs" list')
    valid = sorted((entry for entry in runs if is_entry(entry)), key=_BY_TIMESTAMP)
    unique = valid
    if len(set(map(_BY_RUN_ID, valid))) < len(valid):  # C-level: `runs` parses every task's
        unique = sorted({run_id_of(entry): entry for entry in valid}.values(), key=_BY_TIMESTAMP)
    if len(valid) < len(runs):
        raise CorruptStateError(f"{len(runs) - len(valid)} malformed run entries", unique)
    return unique


def parse_entry(raw: bytes) -> Entry:
    """The entry of a pending snapshot; raises `CorruptStateError`."""
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise CorruptStateError(f"not JSON: {error}") from None
    if not is_entry(entry):
        raise CorruptStateError("not a run entry")
    return cast(Entry, entry)


def parse_archive(raw: bytes) -> list[Entry]:
    """The valid entries of ``state.archive.ndjson``, in file order; a torn or invalid line is
    skipped (the rest of the archive still counts)."""
    lines = [line for line in raw.splitlines() if line.strip()]
    try:  # one parse for the whole file; line by line only when a line is torn
        parsed: list[Any] = json.loads(b"[" + b",".join(lines) + b"]")
    except (ValueError, RecursionError):
        parsed = [_parse_line(line) for line in lines]
    return [entry for entry in parsed if is_entry(entry)]


def _parse_line(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


class TaskStateReader:
    """The history of one task as it is on disk, for listings and renderers.

    Read-only by construction: it takes no lock, writes, renames and deletes nothing. A
    corrupt file is warned about and read for what survives; setting it aside is the writer's
    job (`task_state.TaskStateStore`), the next time the task is written.
    """

    def __init__(self, files: TaskStateFiles, warn: Warn, display: Callable[[Path], str] = str):
        self.files = files
        self._warn = warn
        self._display = display

    def recent(self) -> list[Entry]:
        """The entries of ``state.json``, oldest first."""
        path = self.files.state_path
        try:
            return parse_state(read_record(path))
        except FileNotFoundError:
            return []
        except OSError as error:
            self._warn(f"warning: {self._display(path)}: {error.strerror or error}; skipped")
            return []
        except CorruptStateError as problem:
            self._warn(
                f"warning: {self._display(path)} is corrupt ({problem}); "
                "listing what can still be read"
            )
            return problem.recovered

    def pending(self) -> list[Entry]:
        """The valid snapshots not merged yet (an invalid one is skipped: the next writer
        sets it aside and warns)."""
        try:
            paths = self.files.pending_files()
        except OSError as error:
            self._warn(f"warning: pending state snapshots not listed ({error}); skipped")
            return []
        entries = []
        for path in paths:
            try:
                entries.append(parse_entry(read_record(path)))
            except (OSError, CorruptStateError):
                continue  # merged (deleted) meanwhile, or corrupt
        return entries

    def recorded(self) -> dict[str, Entry]:
        """Entries of ``state.json`` and pending snapshots by run id (the newest of a run)."""
        entries = {run_id_of(entry): entry for entry in self.recent()}
        for entry in self.pending():
            keep_newer(entries, entry)
        return entries

    def archived(self) -> dict[str, Entry]:
        """Entries of ``state.archive.ndjson`` by run id (the newest of a run)."""
        path = self.files.archive_path
        try:
            raw = read_regular(path, ARCHIVE_SIZE_LIMIT, follow_links=False)
        except FileNotFoundError:
            return {}
        except OSError as error:  # UnreadableFileError included
            self._warn(f"warning: {self._display(path)}: {error}; skipped")
            return {}
        entries: dict[str, Entry] = {}
        for entry in parse_archive(raw):
            keep_newer(entries, entry)
        return entries

    def every_run(self) -> list[Entry]:
        """Every recorded run (archived, in ``state.json`` or pending), newest first."""
        entries = self.archived()
        for entry in self.recorded().values():
            keep_newer(entries, entry)
        return sorted(entries.values(), key=timestamp_of, reverse=True)
