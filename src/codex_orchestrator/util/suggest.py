"""The one "did you mean" of the tool: for mistyped commands, options, pipeline names and
config keys alike."""

from __future__ import annotations

from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to ``word`` when one is near enough to be a typo, else None."""
    import difflib

    options = sorted(set(choices))
    found = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not found:  # a prefix of exactly one choice ("--form" for "--format") is a typo too
        found = [choice for choice in options if choice.startswith(word)][:2]
        found = found if len(found) == 1 and len(word) >= 2 else []
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest choice, or an empty string."""
    match = closest(word, choices)
    return f"; did you mean {match!r}?" if match else ""
