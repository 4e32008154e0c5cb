"""Stage output where no live view is drawn (a pipe, a CI log, ``TERM=dumb``), and the GitHub
Actions extras.

Without a live view, each stage's output is streamed as it is written, one ``[stage-id] ``
prefix a line (`PlainEcho`), unless the caller asked for quiet (``--quiet``, the ``quiet``
setting, or ``--format json``, whose stderr carries only notes). Under GitHub Actions
(``GITHUB_ACTIONS=true``) each stage's lines are folded in a ``::group::`` and printed only
while workflow commands are stopped (`GitHubEcho`, through `view.github.CommandGate`), so no
line a stage prints can become a command; at the end of the run each failed stage gets an
``::error`` annotation and the stages table is appended to ``$GITHUB_STEP_SUMMARY``
(`github_run_end`). Everything goes to stderr, the one writer, so the order holds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codex_orchestrator.records.statuses import StageStatus
from codex_orchestrator.util.console import note, write_stderr
from codex_orchestrator.util.terminal_text import neutralise
from codex_orchestrator.view.github import (
    CommandGate,
    append_step_summary,
    endgroup,
    error,
    group,
    inert_block,
    stage_line,
    step_summary_markdown,
)
from codex_orchestrator.view.rows import objects

GITHUB_ACTIONS_ENV = "GITHUB_ACTIONS"
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def on_github_actions(env: Mapping[str, str] | None = None) -> bool:
    """True inside a GitHub Actions job."""
    return (os.environ if env is None else env).get(GITHUB_ACTIONS_ENV) == "true"


class PlainEcho:
    """Stage lines on stderr, each ``[stage-id] text``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def lines(self, stage_id: str, lines: list[str]) -> None:
        """Print ``lines`` of stage ``stage_id``, prefixed."""
        text = "".join(stage_line(stage_id, line) + "\n" for line in lines)
        with self._lock:
            write_stderr(text)

    def stage_ended(self, stage_id: str) -> None:
        """Nothing to close."""

    def close(self) -> None:
        """Nothing to close."""


class GitHubEcho:
    """Stage lines folded per stage and inert to the Actions runner.

    Groups cannot nest, so when stages running at once take turns, the group of the one that
    printed last is closed and the next one's opened (with the same title again).
    """

    def __init__(self, gate: CommandGate | None = None) -> None:
        self._lock = threading.Lock()
        self._gate = gate or CommandGate()
        self._open: str | None = None

    def lines(self, stage_id: str, lines: list[str]) -> None:
        """Print ``lines`` of stage ``stage_id`` in its group, prefixed and inert."""
        with self._lock:
            text = ""
            if self._open != stage_id:
                text += self._end_group() + self._gate.command(group(stage_id))
                self._open = stage_id
            text += self._gate.stage_output(stage_id, "\n".join(lines) + "\n")
            write_stderr(text)

    def stage_ended(self, stage_id: str) -> None:
        """Close the stage's group if it is the one open."""
        with self._lock:
            if self._open == stage_id:
                write_stderr(self._end_group())

    def close(self) -> None:
        """Close any open group and turn workflow commands back on."""
        with self._lock:
            write_stderr(self._end_group() + self._gate.close())

    def _end_group(self) -> str:
        if self._open is None:
            return ""
        self._open = None
        return self._gate.command(endgroup())


def echo_sink(json_output: bool, quiet: bool) -> PlainEcho | GitHubEcho | None:
    """The sink for stage output of a run shown without a live view; None for quiet."""
    from codex_orchestrator.view.terminal import live_view_wanted

    if json_output or quiet or live_view_wanted(json_output):
        return None
    return GitHubEcho() if on_github_actions() else PlainEcho()


def inert_on_github(text: str) -> str:
    """``text`` quoting stage output (summaries, log tails; whole lines), made safe to print:
    neutralised, and under GitHub Actions wrapped in stopped workflow commands, so that no
    line of it can act as a command."""
    safe = neutralise(text)
    return inert_block(safe) if on_github_actions() else safe


def github_run_end(manifest: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
    """Under GitHub Actions: an ``::error`` annotation for each failed stage, and the stages
    table appended to ``$GITHUB_STEP_SUMMARY`` (a warning when it cannot be written)."""
    environ = os.environ if env is None else env
    if not on_github_actions(environ):
        return
    annotations = [
        error(str(entry.get("id")), str(entry.get("summary") or "failed")) + "\n"
        for entry in objects(manifest.get("commands"))
        if entry.get("status") == StageStatus.FAILED
    ]
    write_stderr("".join(annotations))
    summary_path = environ.get(STEP_SUMMARY_ENV, "").strip()
    if not summary_path:
        return
    try:
        append_step_summary(Path(summary_path), step_summary_markdown(manifest))
    except OSError as problem:
        note(f"warning: the job summary was not written ({problem})")
