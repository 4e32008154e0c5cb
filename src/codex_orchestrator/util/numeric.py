"""Numbers from people and from records: one parser with bounds, and finite values only.

Every numeric command-line option, numeric environment variable and numeric setting goes
through `parse_number` (or `parse_count` for whole numbers): text must be plain ASCII decimal
(``str.isdigit`` and ``int`` accept superscripts and other scripts' digits, ``float`` accepts
``inf``, ``nan`` and ``1_000``), and the value must lie within the bounds, so bad input is
one line and exit 2, never a traceback. Numbers read back from records go through `finite`:
a non-finite value (``NaN``, ``Infinity``, ``1e999`` in a hand-edited file) counts as absent.
See docs/configuration.md.
"""

from __future__ import annotations

import math
import re

from codex_orchestrator.errors import OrchestratorError, UsageError

#: The one grammar of a number typed as text: ASCII digits, an optional fraction and exponent.
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: The largest count any option takes (``--limit``, ``--tail``, ``--keep``).
MAX_COUNT = 1_000_000_000


def number_or_none(raw: object) -> float | None:
    """``raw`` as a finite number: an int or float (not a bool), or text in the one grammar;
    None for anything else."""
    if isinstance(raw, str):
        text = raw.strip()
        return float(text) if _DECIMAL.fullmatch(text) else None
    return finite(raw)


def finite(value: object) -> float | None:
    """A number read from a record, or None when it is absent, not a number, or not finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def parse_number(
    raw: object,
    what: str,
    *,
    high: float,
    low: float = 0,
    low_inclusive: bool = True,
    whole: bool = False,
    fix: str,
    error: type[OrchestratorError] = UsageError,
) -> float:
    """``raw`` (text, or a number from a config) within ``low``..``high``; ``whole`` also
    refuses a fraction. Otherwise raises ``error`` naming ``what`` and ending with ``fix``."""
    value = number_or_none(raw)
    if value is None:
        raise error(f"{what}: {raw!r} is not a number; {fix}")
    above_low = value >= low if low_inclusive else value > low
    if not (above_low and value <= high):
        raise error(f"{what}: {raw!r} is out of range; {fix}")
    if whole and not value.is_integer():
        raise error(f"{what}: {raw!r} is not a whole number; {fix}")
    return value


def parse_count(raw: str, what: str, *, low: int = 0, high: int = MAX_COUNT) -> int:
    """A whole number from ``low`` to ``high`` typed on a command line (`UsageError`, exit 2)."""
    fix = f"give a whole number from {low} to {high}"
    return int(parse_number(raw, what, low=low, high=high, whole=True, fix=fix))
