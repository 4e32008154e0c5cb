"""Small rules of wording shared by every text the tool prints: plurals, a status with its
detail, a stage's line (its summary without what the line already shows), and where a run's
stage output is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 run``, ``2 runs`` (``nouns``: an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def status_text(status: object, detail: object) -> str:
    """``failed (stage:test:failed)``; the detail is left out when it only repeats the status
    (``cancelled``, not ``cancelled (cancelled)``)."""
    if not detail or detail == status:
        return str(status)
    return f"{status} ({detail})"


def shown_summary(summary: object, *shown: object) -> str:
    """A stage's summary for a line that already shows ``shown`` (its id, its status): a
    leading ``<id>: `` or ``<status>: `` the summary repeats is dropped (``skipped: no build
    step`` beside ``skipped`` reads ``no build step``)."""
    text = str(summary or "")
    for word in shown:
        prefix = f"{word}: "
        if word and text.startswith(prefix) and len(text) > len(prefix):
            text = text[len(prefix) :]
    return text


def stage_line(command: Mapping[str, Any]) -> str:
    """``   3. test                 skipped     no test step found``: a manifest stage entry."""
    summary = shown_summary(command.get("summary"), command.get("status"), command.get("id"))
    index = command.get("index")
    number = f"{index:>2}" if isinstance(index, int) else " ?"  # a tampered index is not text
    line = f"  {number}. {command.get('id')!s:<20} {command.get('status')!s:<10}"
    return f"{line} {summary}".rstrip()


def logs_line(artifact_root: object, run_id: object) -> str:
    """Where a run's stage output is, and the command that prints it."""
    return f"stage logs: {artifact_root}/commands/ (print them: codex-orchestrator logs {run_id})"
