"""Seeing runs: the live terminal view (`live`) and the self-contained HTML report (`report`).

Nothing here is imported at start-up: `terminal` is cheap and decides whether the live view is
on; `live` (which imports rich) is loaded only when it is. See ``docs/report.md``.
"""
