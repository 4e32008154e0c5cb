"""UTC timestamps as ISO-8601 strings with millisecond precision."""

from __future__ import annotations

import math
import time
from datetime import datetime

#: The times the tool's ISO format can hold, years 0001 to 9999: within them the strings sort
#: as the times do, which is what comparisons of recorded times rely on.
FIRST_TIME = -62135596800.0  # 0001-01-01T00:00:00.000Z
LAST_TIME = 253402300799.9995  # 9999-12-31T23:59:59.999Z (the float of .999 falls short)


def iso_utc(stamp: float | None = None) -> str:
    """Return ``stamp`` (default: now) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``.

    A time outside years 0001-9999 (``--since`` with a far date) is clamped to the nearest
    end of that range, so the string always has this shape and sorts as the time does.
    """
    value = time.time() if stamp is None else min(max(stamp, FIRST_TIME), LAST_TIME)
    seconds = math.floor(value)
    millis = min(int((value - seconds) * 1000), 999)
    moment = time.gmtime(seconds)
    return (
        f"{moment.tm_year:04d}-{moment.tm_mon:02d}-{moment.tm_mday:02d}T{moment.tm_hour:02d}:"
        f"{moment.tm_min:02d}:{moment.tm_sec:02d}.{millis:03d}Z"
    )


def parse_iso_utc(text: str) -> float | None:
    """Parse an ISO-8601 UTC timestamp to epoch seconds; None when it is not one."""
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def compact_utc(stamp: float | None = None) -> str:
    """Return ``stamp`` as ``YYYYMMDDTHHMMSSmmmZ``, for file-name suffixes."""
    return iso_utc(stamp).replace("-", "").replace(":", "").replace(".", "")
