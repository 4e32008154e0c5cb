"""The result line a failing tool prints (``3 failed, 120 passed``, ``Found 6 errors.``).

A failing check's last output line is often noise (``error: test failed, to rerun pass
--lib``, a bare ``FAIL``); the tool's own result line says what went wrong. `RESULT_LINES` is
the table of those lines: adding a tool is adding a row.
"""

from __future__ import annotations

import re

from codex_orchestrator.records.errorfile import clean_text

MAX_RESULT_CHARS = 240

#: (tool, pattern): rows in order of preference. The summary is group 1 of the last line (of
#: stdout, else stderr) that the first matching row matches: a tool's own result beats the
#: line of a runner around it (pytest's over tox's ``py: FAIL code 1``), which beats a shell's.
RESULT_LINES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (tool, re.compile(pattern))
    for tool, pattern in (
        (
            "pytest",
            r"^=*\s*((?:\d+ (?:failed|passed|errors?|skipped|xfailed|xpassed|warnings?|deselected)"
            r"(?:, )?)+ in [\d.]+s\b[^=]*?|no tests ran in [\d.]+s)\s*=*$",
        ),
        ("ruff, mypy, tsc", r"^(Found \d+ errors?\b.*)$"),
        ("eslint", r"^(✖ \d+ problems? \(.*\))$"),
        ("cargo test", r"^(test result: FAILED\..*)$"),
        ("cargo build", r"^(error: could not compile .*)$"),
        ("go test", r"^(FAIL\s+\S+.*)$"),
        ("jest", r"^(Tests:\s+.*\bfailed\b.*)$"),
        ("vitest", r"^\s*(Tests\s+\d+ failed.*)$"),
        ("node --test", r"^# (fail [1-9]\d*)$"),
        ("tox", r"^\s*(\S+: FAIL code \d+.*)$"),
        ("nox", r"^nox > (Session \S+ failed\..*)$"),
        (
            "sh",
            r"^((?:/bin/)?(?:ba|da)?sh: (?:line )?\d+: .*(?:not found|No such file or directory))$",
        ),
    )
)
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def result_line(stdout_tail: bytes, stderr_tail: bytes) -> str | None:
    """The preferred tool result line in the output tails (see `RESULT_LINES`), or None."""
    lines = [
        clean_text(raw).strip()
        for tail in (stderr_tail, stdout_tail)
        for raw in _ANSI.sub(b"", tail).splitlines()
    ]
    lines.reverse()  # last line of stdout first, then stdout upwards, then stderr upwards
    for _tool, pattern in RESULT_LINES:
        for line in lines:
            match = pattern.match(line)
            if match:
                return match.group(1).strip()[:MAX_RESULT_CHARS]
    return None
