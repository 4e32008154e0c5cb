"""The one "did you mean" of the tool: for mistyped commands, options, pipeline names and
config keys alike."""

from __future__ import annotations

from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to ``word`` when one is near enough to be a typo, else None.

    Nearest by edits (a swap of two neighbours counts as one, so ``strat`` is ``start``, not
    ``stats``), allowing about one edit in three letters; else the most similar by
    `difflib` (cutoff 0.6); else the one choice ``word`` begins (``--form`` for ``--format``)."""
    options = sorted(set(choices))
    allowed = len(word) // 3  # none for a word of one or two letters
    scored = [(_edits(word, option), option) for option in options]
    near = [(distance, option) for distance, option in scored if distance <= allowed]
    if near:
        return min(near)[1]
    import difflib

    similar = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if similar:  # a longer word with more changes, still plainly the same one
        return similar[0]
    starting = [option for option in options if option.startswith(word)]
    return starting[0] if len(starting) == 1 and len(word) >= 2 else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest choice, or an empty string."""
    match = closest(word, choices)
    return f"; did you mean {match!r}?" if match else ""


def _edits(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap of neighbours) from ``a`` to ``b``."""
    previous, current = list(range(len(b) + 1)), [0] * (len(b) + 1)
    before: list[int] = []
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        before, previous = previous, current
    return previous[len(b)]
