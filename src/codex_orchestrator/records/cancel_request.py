"""Cancel requests: written by ``cancel`` beside the manifest, acted on by the run's driver,
recorded by the final records.

- ``cancel`` adds its request (actor, reason, time) to ``<run>/cancel-request.json`` under the
  run's request lock (`record_request`), so that concurrent cancels all keep theirs, and only
  while the run has not ended: the final records take the same lock before they close the run.
- The driver watches the runs it drives (`watching`): on a wake-up (``cancel`` sends
  `signals.WAKE_SIGNAL`) and every few tenths of a second, `act_on_requests` cancels each run
  that has a current request, and that run only: a child run driven in its parent's process
  is cancelled alone.
- The final records (`closing_requests`) turn the requests into ``cancel_events`` entries with
  ``status_detail: "cancelled"`` when the run ends cancelled, and drop them when it ended
  otherwise first (the cancel came too late); either way the file is gone.

A request older than the run's latest resume is stale (it was for an earlier pass) and is
ignored. See ``docs/run-control.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from codex_orchestrator.errors import LockTimeoutError
from codex_orchestrator.records.manifest import MANIFEST_NAME, load_manifest
from codex_orchestrator.records.statuses import CANCELLED_DETAIL, TERMINAL_RUN_STATUSES, RunStatus
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.jsonio import atomic_write_json
from codex_orchestrator.util.locks import FileLock
from codex_orchestrator.util.safefs import UnreadableFileError, read_regular, remove_file

REQUEST_NAME = "cancel-request.json"
REQUEST_LOCK_NAME = ".cancel.lock"
#: How long ``cancel`` waits for a run's final records to let go of the request lock.
LOCK_ATTEMPTS = 12  # 0.1 + 0.2 + 0.4 + 0.8 + 1 s x 7: about 8.5 s


def record_request(run_dir: Path, actor: str, reason: str | None) -> dict[str, Any] | None:
    """Add a cancel request for the run in ``run_dir`` (durably) and return it; None when the
    run has already ended (nothing is written then).

    Raises `LockTimeoutError` (exit 75) when the run's final records hold the lock too long,
    `CorruptManifestError` when the manifest cannot be read, OSError when the run directory
    cannot be written.
    """
    request = {
        "requested_at": iso_utc(),
        "actor": actor,
        "reason": reason,
        "requested_by_pid": os.getpid(),
    }
    with _request_lock(run_dir, LOCK_ATTEMPTS):
        if load_manifest(run_dir / MANIFEST_NAME)["status"] in TERMINAL_RUN_STATUSES:
            return None
        atomic_write_json(
            run_dir / REQUEST_NAME, {"requests": [*read_requests(run_dir), request]}, durable=True
        )
    return request


def read_requests(run_dir: Path) -> list[dict[str, Any]]:
    """The pending cancel requests of a run, oldest first (a file from before requests were
    kept as a list holds one)."""
    try:
        document = json.loads(read_regular(run_dir / REQUEST_NAME, 1 << 20, follow_links=False))
    except (OSError, UnreadableFileError, ValueError, RecursionError):
        return []
    if isinstance(document, dict) and isinstance(document.get("requests"), list):
        return [item for item in document["requests"] if isinstance(item, dict)]
    return [document] if isinstance(document, dict) else []


def current_requests(run_dir: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The requests made since the run's latest resume (older ones were for an earlier pass)."""
    resumes = data.get("resume_events") or []
    last = resumes[-1].get("timestamp") if resumes and isinstance(resumes[-1], dict) else None
    since = last if isinstance(last, str) else ""
    return [
        request
        for request in read_requests(run_dir)
        if str(request.get("requested_at") or "") >= since
    ]


@contextlib.contextmanager
def closing_requests(run_dir: Path) -> Iterator[None]:
    """Hold the run's request lock while its final records are written: a ``cancel`` either
    comes before (its request is applied or dropped) or sees the run ended.

    Records are never held back by it: when the lock cannot be had quickly they go ahead.
    """
    lock = _request_lock(run_dir, 3)
    with contextlib.suppress(LockTimeoutError, OSError):
        lock.acquire()
    try:
        yield
    finally:
        lock.release()  # a no-op when it was not taken


def apply_requests(
    run_dir: Path, data: dict[str, Any], status: str, detail: str | None
) -> str | None:
    """Close the run's requests (the file is removed): for a run ending ``cancelled``, record
    each current one as a ``cancel_events`` entry and return ``"cancelled"``; otherwise (or
    without a current request) return ``detail`` unchanged."""
    requests = current_requests(run_dir, data) if os.path.lexists(run_dir / REQUEST_NAME) else []
    with contextlib.suppress(OSError):
        remove_file(run_dir / REQUEST_NAME)
    if status != RunStatus.CANCELLED or not requests:
        return detail
    recorded = iso_utc()
    events = data.get("cancel_events")
    data["cancel_events"] = [
        *(events if isinstance(events, list) else []),
        *(
            {
                "timestamp": str(request.get("requested_at") or ""),
                "actor": request.get("actor"),
                "reason": request.get("reason"),
                "recorded_at": recorded,
            }
            for request in requests
        ),
    ]
    return CANCELLED_DETAIL


class Cancellation(Protocol):
    """What `watching` needs of an `executors.base.Cancellation` (records sit below
    executors)."""

    @property
    def requested(self) -> bool: ...
    def request(self, signum: int) -> None: ...


class _Watched:
    """The runs this process drives, with what cancels each and what counts as current."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[Path, tuple[Cancellation, dict[str, Any]]] = {}


_watched = _Watched()


@contextlib.contextmanager
def watching(run_dir: Path, cancellation: Cancellation, data: dict[str, Any]) -> Iterator[None]:
    """Have `act_on_requests` cancel this run (``cancellation``) on a current request while the
    block runs; ``data`` is the run's manifest (for its latest resume). A request already
    pending (made before this process could be woken) is acted on at once."""
    with _watched.lock:
        _watched.runs[run_dir] = (cancellation, data)
    try:
        act_on_requests()
        yield
    finally:
        with _watched.lock:
            _watched.runs.pop(run_dir, None)


def act_on_requests() -> None:
    """Cancel each watched run that has a current request (and has not been cancelled yet)."""
    with _watched.lock:
        runs = list(_watched.runs.items())
    for run_dir, (cancellation, data) in runs:
        if cancellation.requested or not os.path.lexists(run_dir / REQUEST_NAME):
            continue
        if current_requests(run_dir, data):
            cancellation.request(signal.SIGTERM)


def _request_lock(run_dir: Path, attempts: int) -> FileLock:
    """The run's request lock, ``<run>/.cancel.lock`` (a run directory that is gone is never
    created again by taking it)."""
    return FileLock(run_dir / REQUEST_LOCK_NAME, attempts=attempts, make_parent=False)
