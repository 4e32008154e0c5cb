"""Seeing runs: the live terminal view (`live`) and the self-contained HTML report (`report`).

`text`, the one neutraliser of terminal-bound text, is cheap and used by every command's output;
`terminal` is cheap too and decides whether the live view is on; `live` (which imports rich)
is loaded only when it is. See ``docs/report.md``.
"""
