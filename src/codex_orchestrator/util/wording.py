"""Small rules of wording shared by every text the tool prints: plurals, a status with its
detail, and a stage summary shown beside the stage's id and status."""

from __future__ import annotations


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
