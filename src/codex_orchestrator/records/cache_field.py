"""The ``cache`` field of a stage entry (docs/run-records.md): made here, read here.

Every surface that shows a cached stage (``plan``, ``status``, the live view, the report,
the MCP tools, ``tasks check``) reads the field through these functions, which check each
value's type: a manifest may be tampered with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from codex_orchestrator.records.statuses import CacheStatus
from codex_orchestrator.util.jsonio import array_objects

CACHE_FIELD = "cache"


def cache_field(
    status: CacheStatus,
    key: str | None,
    reason: str | None,
    *,
    from_run: str | None = None,
    from_task: str | None = None,
    saved_seconds: float | None = None,
) -> dict[str, Any]:
    """A stage entry's ``cache`` value."""
    return {
        "status": str(status),
        "key": key,
        "reason": reason,
        "from_run": from_run,
        "from_task": from_task,
        "saved_seconds": saved_seconds,
    }


def cache_of(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The entry's ``cache`` field when it is an object with a known status."""
    field = entry.get(CACHE_FIELD)
    if isinstance(field, Mapping) and field.get("status") in set(CacheStatus):
        return field
    return None


def hit_from(entry: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """``(from_run, from_task)`` of a stage served from the cache; None for any other stage."""
    field = cache_of(entry)
    if field is None or field["status"] != CacheStatus.HIT:
        return None
    run, task = field.get("from_run"), field.get("from_task")
    if not isinstance(run, str) or not run:
        return None
    return run, task if isinstance(task, str) and task else None


def saved_seconds(entry: Mapping[str, Any]) -> float:
    """The seconds a hit saved (0 for anything else, or a value that is not a time)."""
    field = cache_of(entry)
    if field is None or field["status"] != CacheStatus.HIT:
        return 0.0
    value = field.get("saved_seconds")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value >= 0 else 0.0


def cache_totals(entries: object) -> tuple[int, float]:
    """How many stages of ``commands[]`` were served from the cache, and the seconds they
    saved (anything that is not a stage entry is passed over)."""
    hits = [entry for entry in array_objects(entries) if hit_from(entry) is not None]
    return len(hits), sum(saved_seconds(entry) for entry in hits)


def totals_text(entries: object) -> str:
    """``2 stages from the cache, 4.2s saved``; empty when no stage was a hit."""
    hits, saved = cache_totals(entries)
    if not hits:
        return ""
    return f"{hits} stage{'s' if hits > 1 else ''} from the cache, {saved:.1f}s saved"


def cache_text(entry: Mapping[str, Any]) -> str:
    """One line: ``cached from run R (saved 4.2s)``, ``cache miss: src/app.py modified``,
    ``cache off``; empty for a stage without a cache."""
    field = cache_of(entry)
    if field is None:
        return ""
    if field["status"] == CacheStatus.OFF:
        return "cache off"
    source = hit_from(entry)
    if source is not None:
        return f"cached from run {source[0]} (saved {saved_seconds(entry):.1f}s)"
    reason = field.get("reason")
    text = f"cache miss: {reason}" if isinstance(reason, str) and reason else "cache miss"
    if field.get("store") == "not stored" and isinstance(field.get("store_reason"), str):
        text += f"; not stored: {field['store_reason']}"
    return text
