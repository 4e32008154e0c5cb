"""Stage output where no live view is drawn (a pipe, a CI log, ``TERM=dumb``), and the GitHub
Actions extras.

Without a live view, each stage's output is streamed as it is written, one ``[stage-id] ``
prefix a line (`PlainEcho`), unless the caller asked for quiet (``--quiet``, the ``quiet``
setting, or ``--format json``, whose stderr carries only notes). Under GitHub Actions
(``GITHUB_ACTIONS=true``) each stage's lines are folded in a ``::group::`` and printed only
while workflow commands are stopped (`view.github.GitHubEcho`, through its `CommandGate`), so no
line a stage prints can become a command; at the end of the run each failed stage gets an
``::error`` annotation and the stages table is appended to ``$GITHUB_STEP_SUMMARY``
(`github_run_end`). Everything goes to stderr, the one writer, so the order holds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codex_orchestrator.records.statuses import StageStatus
from codex_orchestrator.util.console import note, write_stderr
from codex_orchestrator.util.jsonio import array_objects
from codex_orchestrator.util.terminal_text import neutralise, prefixed_line

if TYPE_CHECKING:  # the GitHub extras are imported only under GitHub Actions (cold start)
    from codex_orchestrator.view.github import GitHubEcho

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
        text = "".join(prefixed_line(stage_id, line) + "\n" for line in lines)
        with self._lock:
            write_stderr(text)

    def stage_ended(self, stage_id: str) -> None:
        """Nothing to close."""

    def close(self) -> None:
        """Nothing to close."""


def echo_sink(json_output: bool, quiet: bool) -> PlainEcho | GitHubEcho | None:
    """The sink for stage output of a run shown without a live view; None for quiet."""
    from codex_orchestrator.view.terminal import live_view_wanted

    if json_output or quiet or live_view_wanted(json_output):
        return None
    if not on_github_actions():
        return PlainEcho()
    from codex_orchestrator.view.github import GitHubEcho

    return GitHubEcho()


def inert_on_github(text: str) -> str:
    """``text`` quoting stage output (summaries, log tails; whole lines), made safe to print:
    neutralised, and under GitHub Actions wrapped in stopped workflow commands, so that no
    line of it can act as a command."""
    safe = neutralise(text)
    if not on_github_actions():
        return safe
    from codex_orchestrator.view.github import inert_block

    return inert_block(safe)


def github_run_end(manifest: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
    """Under GitHub Actions: an ``::error`` annotation for each failed stage, and the stages
    table appended to ``$GITHUB_STEP_SUMMARY`` (a warning when it cannot be written)."""
    environ = os.environ if env is None else env
    if not on_github_actions(environ):
        return
    from codex_orchestrator.view.github import append_step_summary, error, step_summary_markdown

    annotations = [
        error(str(entry.get("id")), str(entry.get("summary") or "failed")) + "\n"
        for entry in array_objects(manifest.get("commands"))
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
