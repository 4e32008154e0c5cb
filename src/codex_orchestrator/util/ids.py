"""Id validation and run-id generation.

Task, run, pipeline and stage ids must match ``ID_PATTERN``; case is preserved. This rule is
what keeps every path the tool writes inside the runs and out roots.
"""

from __future__ import annotations

import os
import re
import time

from codex_orchestrator.errors import InvalidIdError

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
ID_RULE = "use 1-128 characters from A-Z a-z 0-9 _ -, starting with a letter or digit"
RUN_ID_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z-[0-9a-f]{8}")


def is_valid_id(value: str) -> bool:
    """Return True when ``value`` is a valid task/run/pipeline/stage id."""
    return ID_PATTERN.fullmatch(value) is not None


def validate_id(value: str, kind: str) -> str:
    """Return ``value`` when valid, else raise `InvalidIdError` naming ``kind`` and the rule."""
    if not is_valid_id(value):
        raise InvalidIdError(f"invalid {kind} id {value!r}: {ID_RULE}")
    return value


def new_run_id(now: float | None = None) -> str:
    """Return a sortable run id ``YYYY-MM-DDTHH-MM-SS-mmmZ-<8 hex>`` for ``now`` (UTC)."""
    stamp = time.time() if now is None else now
    seconds = int(stamp)
    millis = int((stamp - seconds) * 1000)
    prefix = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(seconds))
    return f"{prefix}-{millis:03d}Z-{os.urandom(4).hex()}"
