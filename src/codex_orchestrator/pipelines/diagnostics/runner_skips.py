"""What tox's and nox's own output says about environments (sessions) they skipped.

A runner that skips every environment it was asked for (no interpreter for it,
``skip_missing_interpreters``, ``session.skip()``) checked nothing; the stage is ``skipped``
with the runner's reason, never ``succeeded``. The lines read are the tools' report lines:

- tox 4: the final report ``  <env>: SKIP (1.20 seconds)`` (or ``NOT AVAILABLE``) for every
  environment, with a ``<env>: skipped because <reason>`` line; tox exits 1 when all skipped;
- nox: ``nox > Session <name> skipped: <reason> (took 2 seconds).`` after each session, and
  after several a summary of ``nox > * <name>: skipped (<reason>), took 2 seconds`` lines (the
  last word on a session wins: the summary covers sessions whose lines the tail cut); nox
  exits 0.

Any environment that ran (``OK``, ``FAIL code N``; ``was successful``, ``failed``) keeps the
exit status as the outcome.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from codex_orchestrator.records.errorfile import clean_text

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
_TOX_REPORT = re.compile(
    r"^  (?P<env>\S+): (?P<outcome>OK|SKIP|NOT AVAILABLE|(?:IGNORED )?FAIL code -?\d+)"
    r" \([^)]*seconds\)$"
)
_TOX_REASON = re.compile(r"^(?P<env>\S+): skipped because (?P<reason>.+)$")
_NOX_OUTCOME = re.compile(
    r"^nox > Session (?P<env>\S+) (?:(?P<skipped>skipped): (?P<reason>.+?)"
    r"(?: \(took [^)]*\))?\.?|was successful\b.*|failed\b.*|aborted\b.*|interrupted\b.*)$"
)
_NOX_SUMMARY = re.compile(
    r"^nox > \* (?P<env>\S+): (?:(?P<skipped>skipped)(?: \((?P<reason>.*)\))?|\w+)"
    r"(?:, took .*)?$"
)
#: Exit statuses with which a runner that skipped everything ends.
SKIP_EXIT_CODES = {"tox": (0, 1), "nox": (0,)}
MAX_REASON_CHARS = 240


class RunnerSkip(NamedTuple):
    """The stage's summary and its ``skip_reason`` (``tool-missing`` when an interpreter
    was missing, else ``not-applicable``)."""

    summary: str
    kind: str


def runner_skip(
    runner: str, stdout_tail: bytes, stderr_tail: bytes, exit_code: int | None
) -> RunnerSkip | None:
    """``skipped: tox skipped py39: <reason>`` when ``runner`` skipped every environment it
    reported on, else None (it ran something, or its output shows no report)."""
    if exit_code not in SKIP_EXIT_CODES.get(runner, ()):
        return None
    lines = [
        clean_text(raw).rstrip()
        for tail in (stdout_tail, stderr_tail)
        for raw in _ANSI.sub(b"", tail).splitlines()
    ]
    skipped = _tox_skips(lines) if runner == "tox" else _nox_skips(lines)
    if not skipped:
        return None
    named = "; ".join(f"{env}: {reason}" if reason else env for env, reason in skipped.items())
    kind = "tool-missing" if "interpreter" in named else "not-applicable"
    return RunnerSkip(f"skipped: {runner} skipped {named}"[:MAX_REASON_CHARS], kind)


def _tox_skips(lines: list[str]) -> dict[str, str] | None:
    outcomes: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for line in lines:
        if report := _TOX_REPORT.match(line):
            outcomes[report["env"]] = report["outcome"]
        elif reason := _TOX_REASON.match(line):
            reasons[reason["env"]] = reason["reason"]
    if not outcomes or any(
        outcome not in ("SKIP", "NOT AVAILABLE") for outcome in outcomes.values()
    ):
        return None
    return {env: reasons.get(env, outcome.lower()) for env, outcome in outcomes.items()}


def _nox_skips(lines: list[str]) -> dict[str, str] | None:
    outcomes: dict[str, str | None] = {}
    for line in lines:
        if match := _NOX_OUTCOME.match(line) or _NOX_SUMMARY.match(line):
            outcomes[match["env"]] = (match["reason"] or "") if match["skipped"] else None
    if not outcomes or any(reason is None for reason in outcomes.values()):
        return None
    return {env: reason or "" for env, reason in outcomes.items()}
