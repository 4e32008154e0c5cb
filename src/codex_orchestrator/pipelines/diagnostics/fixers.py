"""Commands that rewrite the repository's files (formatters, ``--fix``, pre-commit).

Diagnostics checks the repository; it never changes it. A declared environment, session or
target whose commands rewrite files (tox-dev's ``fix`` environment, a ``lint`` session that
runs ``pre-commit run``, ``black .`` without ``--check``) is never chosen for a stage: it would
change the working tree while other stages read it. `FIXERS` is the table: adding a tool is
adding a row.
"""

from __future__ import annotations

import re

#: (tool words, flags of which any one makes it rewrite, flags of which any one makes it
#: check-only). An empty first tuple of flags: the tool rewrites unless a check-only flag is
#: given. pre-commit and pyupgrade rewrite whatever their flags: their hooks/fixes write files.
FIXERS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("pre-commit", (), ()),
    ("prek", (), ()),
    ("pyupgrade", (), ()),
    ("ruff format", (), ("--check", "--diff")),
    ("ruff", ("--fix",), ("--diff", "--no-fix")),
    ("black", (), ("--check", "--diff")),
    ("isort", (), ("--check", "--check-only", "-c", "--diff")),
    ("autopep8", ("-i", "--in-place"), ()),
    ("autoflake", ("-i", "--in-place"), ()),
    ("docformatter", ("-i", "--in-place"), ()),
    ("pyproject-fmt", (), ("--check",)),
    ("tox-ini-fmt", (), ()),
    ("codespell", ("-w", "--write-changes"), ()),
    ("prettier", ("-w", "--write"), ()),
    ("eslint", ("--fix",), ()),
    ("cargo fmt", (), ("--check",)),
    ("cargo clippy", ("--fix",), ()),
    ("go fmt", (), ()),
    ("gofmt", ("-w",), ()),
    ("clang-format", ("-i",), ()),
)
# A command starts at a line start, after a shell separator, a quote or a bracket (tox.toml's
# ``["ruff", "format"]``, a nox session's ``("black", ".")``) or after a launcher (``uv run``,
# ``python -m``, ``npx``); its words are separated by blanks, commas and quotes. Callers pass
# only commands (tox ``commands``, a session's ``session.run`` calls, recipe lines): a
# dependency list would read as commands.
_COMMAND_START = r"(?:^|[;&|(\[\"'`]|-m\s+|\b(?:run|npx|exec)\s+)"
_SEPARATOR = r"[\s,\"']+"
_END = re.compile(r"[;&|\n)\]]")
#: A recipe is read up to this many characters, a command's flags up to this many after the
#: tool's name: hostile input (a huge file of tool names) costs time linear in the cap.
MAX_COMMANDS_CHARS = 64 * 1024
MAX_FLAGS_CHARS = 1024


def rewrites_files(commands: str) -> str | None:
    """The first command in ``commands`` that rewrites files (e.g. ``pre-commit``), else None.

    ``commands`` is a recipe's text in any of the shapes runners use (shell lines, tox
    ``commands``, a nox session's ``session.run(...)`` calls).
    """
    commands = commands[:MAX_COMMANDS_CHARS]
    for tool, pattern, rewriting, checking in _PATTERNS:
        for match in pattern.finditer(commands):
            window = commands[match.end() : match.end() + MAX_FLAGS_CHARS]
            end = _END.search(window)
            flags = re.split(_SEPARATOR, window[: end.start() if end else None])
            if any(flag in checking for flag in flags):
                continue
            if not rewriting or any(flag in rewriting for flag in flags):
                return tool
    return None


def _pattern(tool: str) -> re.Pattern[str]:
    words = _SEPARATOR.join(re.escape(word) for word in tool.split())
    return re.compile(rf"{_COMMAND_START}\s*{words}(?=[\s,\"']|$)", re.MULTILINE)


_PATTERNS = tuple(
    (tool, _pattern(tool), rewriting, checking) for tool, rewriting, checking in FIXERS
)
