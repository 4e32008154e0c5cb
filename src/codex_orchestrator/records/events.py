"""``runner.ndjson``: the run's lifecycle events, one JSON object per line."""

# No `from __future__ import annotations` (docs/architecture.md, cold start): typing would
# compile each NamedTuple/TypedDict field written as a string into a ForwardRef at import.

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Required, TypedDict, cast

from codex_orchestrator.records.manifest import Handle
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.console import note
from codex_orchestrator.util.jsonio import encode_record, json_text
from codex_orchestrator.util.safefs import UnreadableFileError, open_no_follow, read_regular

#: The most of a run's event log read back (by resume, for the stages' handles).
EVENTS_READ_LIMIT = 256 * 1024 * 1024


class Event(TypedDict, total=False):
    """One line of ``runner.ndjson``: when, which event, and the event's own fields (those
    readers use are typed here; docs/run-records.md lists every event)."""

    timestamp: Required[str]
    event: Required[str]
    run_id: str
    index: int
    stage_id: str
    attempt: int
    status: str
    status_detail: str | None
    exit_code: int | None
    summary: str | None
    handle: Handle
    error: str


class EventLog:
    """Appends lifecycle events to a run's ``runner.ndjson`` (one ``write`` per event)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except OSError as error:  # the event log is a diagnostic: its loss never stops a run
            note(f"warning: {path}: events not recorded ({error.strerror})")
            self._fd = -1

    def emit(self, event: str, **fields: Any) -> None:
        """Append one event; a failed append never disturbs the run."""
        record = {"timestamp": iso_utc(), "event": event, **fields}
        line = encode_record(json_text(record, pretty=False) + "\n")
        with self._lock:
            if self._fd < 0:
                return
            with contextlib.suppress(OSError):
                os.write(self._fd, line)

    def close(self) -> None:
        """Close the log; later events are dropped."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_events(path: Path, event: str) -> list[Event]:
    """The events named ``event`` in the log at ``path``; torn or foreign lines are skipped."""
    try:
        data = read_regular(path, EVENTS_READ_LIMIT, follow_links=False)
    except (FileNotFoundError, UnreadableFileError):
        return []
    # the writer's own encoding of the field, so that the quick filter matches what it wrote
    marker = json_text({"event": event}, pretty=False)[1:-1].encode()
    found: list[Event] = []
    for line in data.splitlines():
        if marker not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(cast(Event, record))
    return found
