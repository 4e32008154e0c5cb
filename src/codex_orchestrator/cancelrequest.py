"""Cancel requests: written by ``cancel`` beside the manifest, applied by the final records.

``cancel`` first writes ``<run>/cancel-request.json`` (actor, reason, time) durably, then
signals the run's orchestrator. When the run ends ``cancelled``, the final-records code finds
the request, records it as a ``cancel_events`` entry, sets ``status_detail`` to
``"cancelled"`` and removes the file. A request older than the run's latest resume is stale
(it was for an earlier pass) and is ignored. See ``docs/run-control.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from codex_orchestrator.clock import iso_utc
from codex_orchestrator.jsonio import atomic_write_json
from codex_orchestrator.safefs import UnreadableFileError, read_regular, remove_file
from codex_orchestrator.statuses import CANCELLED_DETAIL

REQUEST_NAME = "cancel-request.json"


def write_request(run_dir: Path, actor: str, reason: str | None) -> dict[str, Any]:
    """Record a cancel request for the run in ``run_dir`` (durably) and return it."""
    request = {
        "requested_at": iso_utc(),
        "actor": actor,
        "reason": reason,
        "requested_by_pid": os.getpid(),
    }
    atomic_write_json(run_dir / REQUEST_NAME, request, durable=True)
    return request


def read_request(run_dir: Path) -> dict[str, Any] | None:
    """The pending cancel request of a run, or None."""
    try:
        request = json.loads(read_regular(run_dir / REQUEST_NAME, 1 << 20, follow_links=False))
    except (OSError, UnreadableFileError, ValueError):
        return None
    return request if isinstance(request, dict) else None


def apply_request(run_dir: Path, data: dict[str, Any], detail: str | None) -> str | None:
    """For a run ending ``cancelled``: record a pending request as a ``cancel_events`` entry
    and return ``"cancelled"``; without a (current) request, return ``detail`` unchanged."""
    request = read_request(run_dir)
    if request is None:
        return detail
    with contextlib.suppress(OSError):
        remove_file(run_dir / REQUEST_NAME)
    resumes = data.get("resume_events") or []
    last_resume = (
        resumes[-1].get("timestamp") if resumes and isinstance(resumes[-1], dict) else None
    )
    requested_at = str(request.get("requested_at") or "")
    if isinstance(last_resume, str) and requested_at < last_resume:
        return detail
    event = {
        "timestamp": requested_at,
        "actor": request.get("actor"),
        "reason": request.get("reason"),
        "recorded_at": iso_utc(),
    }
    events = data.get("cancel_events")
    data["cancel_events"] = [*(events if isinstance(events, list) else []), event]
    return CANCELLED_DETAIL
