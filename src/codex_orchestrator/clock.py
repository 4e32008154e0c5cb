"""UTC timestamps as ISO-8601 strings with millisecond precision."""

from __future__ import annotations

import time
from datetime import datetime


def iso_utc(stamp: float | None = None) -> str:
    """Return ``stamp`` (default: now) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    value = time.time() if stamp is None else stamp
    seconds = int(value)
    millis = int((value - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def parse_iso_utc(text: str) -> float | None:
    """Parse an ISO-8601 UTC timestamp to epoch seconds; None when it is not one."""
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def compact_utc(stamp: float | None = None) -> str:
    """Return ``stamp`` as ``YYYYMMDDTHHMMSSmmmZ``, for file-name suffixes."""
    return iso_utc(stamp).replace("-", "").replace(":", "").replace(".", "")
