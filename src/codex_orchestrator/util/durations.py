"""Parsing ``--since`` and ``--older-than`` values: ``90s``, ``30m``, ``2h``, ``7d``, ``2w`` or a date.

Ages are durations back from now; ``--since`` also takes an ISO-8601 date or time (UTC unless
it carries an offset). Both parsers raise `UsageError` with one line naming the option.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from codex_orchestrator.errors import UsageError

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_FIX = "give an age such as 90s, 30m, 2h, 7d or 2w"
MAX_AGE_SECONDS = 100 * 365 * 86400


def parse_age(text: str, option: str) -> float:
    """Seconds in an age such as ``2h`` or ``7d``; `UsageError` naming ``option`` otherwise."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        raise UsageError(f"{option} {text!r}: not an age; {_FIX}")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_AGE_SECONDS:
        raise UsageError(f"{option} {text!r}: more than 100 years; {_FIX}")
    return seconds


def parse_since(text: str, option: str = "--since", now: float | None = None) -> float:
    """The epoch time that ``text`` designates: now minus an age, or an ISO-8601 date/time."""
    if _AGE.fullmatch(text.strip().lower()):
        return (time.time() if now is None else now) - parse_age(text, option)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: neither an age nor an ISO date; {_FIX}, or a date such as "
            "2026-01-31 or 2026-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
