"""GitHub Actions output (``GITHUB_ACTIONS=true``): workflow commands, inert stage output and
the job summary table.

Workflow commands are lines the runner reads from a step's output: ``::name
key=value,key=value::message``. Values are escaped as the runner unescapes them: in the
message ``%`` → ``%25``, CR → ``%0D``, LF → ``%0A``; in property values also ``:`` → ``%3A`` and
``,`` → ``%2C``.

Stage output must never become a command (``::add-mask::``, ``::set-output``, ``::error``,
``::stop-commands::`` from a test's output would mask, set or annotate what the workflow
trusts). Two defences, because each alone has a gap:

- every line of stage output is printed as ``[<stage>] <text>``. The runner takes a line as a
  ``::`` command only when it starts with ``::`` after leading whitespace, so the prefix
  defeats those. It does not defeat the legacy ``##[name]data`` form, which the runner looks
  for anywhere in a line. Control characters are made visible, so a carriage return in the
  output (the runner splits lines at CR too) cannot start a fresh, unprefixed line;
- stage output is printed only while command processing is stopped:
  ``::stop-commands::<token>`` before it, ``::<token>::`` after, with a fresh random token each
  time (`CommandGate`). While stopped, the runner acts on no command, of either form, except
  the token, which a stage cannot guess.

`CommandGate` returns text to print rather than printing, so the caller keeps one writer.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from codex_orchestrator.util.console import write_stderr
from codex_orchestrator.util.jsonio import array_objects
from codex_orchestrator.util.terminal_text import neutralise, prefixed_line
from codex_orchestrator.view.attempts import shown_status
from codex_orchestrator.view.rows import (
    MARKS,
    UNKNOWN_MARK,
    format_seconds,
    recorded_seconds,
)

#: Longest stage-derived text in a summary cell, in characters before escaping.
CELL_CHARS = 300
#: GitHub refuses a job summary over 1 MiB; the table stops well before that.
SUMMARY_BYTES = 512 * 1024
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def escape_data(text: str) -> str:
    """A workflow command's message, escaped as the runner unescapes it."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value, escaped as the runner unescapes it."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(name: str, message: str = "", **properties: str) -> str:
    """``::name key=value,...::message``: one line, no newline at the end.

    ``name`` and the property names are this module's constants; values and the message are
    neutralised (escape sequences dropped, control characters made visible) and escaped.
    """
    pairs = ",".join(
        f"{key}={escape_property(neutralise(value))}" for key, value in properties.items()
    )
    head = f"{name} {pairs}" if pairs else name
    return f"::{head}::{escape_data(neutralise(message))}"


def group(title: str) -> str:
    """Start a folded group of log lines titled ``title``."""
    return workflow_command("group", title)


def endgroup() -> str:
    """End the current folded group."""
    return workflow_command("endgroup")


def error(title: str, message: str) -> str:
    """An error annotation (shown on the run's summary page) titled ``title``."""
    return workflow_command("error", message, title=title)


def new_token() -> str:
    """A stop-commands token no stage can guess."""
    return secrets.token_hex(16)


def inert_block(text: str, token_factory: Callable[[], str] = new_token) -> str:
    """``text`` (whole lines, already neutralised) with workflow commands stopped around it,
    for text that quotes stage output without a prefix on every line (a failure's log tail,
    a table of summaries). Printed on one stream, so the runner reads it in this order."""
    if not text:
        return text
    token = token_factory()
    end = "" if text.endswith("\n") else "\n"
    return f"{workflow_command('stop-commands', token)}\n{text}{end}::{token}::\n"


class CommandGate:
    """Interleaves our workflow commands with stage output so that only ours are acted on.

    Each method returns the text to print (whole lines). Stage output turns command
    processing off (``::stop-commands::<token>``) until the next command of ours turns it back
    on (``::<token>::``); the token is new each time.
    """

    def __init__(self, token_factory: Callable[[], str] = new_token) -> None:
        self._token_factory = token_factory
        self._token: str | None = None

    def command(self, line: str) -> str:
        """Print workflow command ``line`` (from `group`, `endgroup`, `error`)."""
        return self._resume() + line + "\n"

    def stage_output(self, stage_id: str, text: str) -> str:
        """Print ``text`` (one or more lines) a stage wrote, prefixed and inert."""
        lines = re.split(r"\r\n|\r|\n", text)
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            return ""
        stop = ""
        if self._token is None:
            self._token = self._token_factory()
            stop = workflow_command("stop-commands", self._token) + "\n"
        return stop + "".join(prefixed_line(stage_id, line) + "\n" for line in lines)

    def close(self) -> str:
        """Turn command processing back on, if stage output turned it off."""
        return self._resume()

    def _resume(self) -> str:
        if self._token is None:
            return ""
        token, self._token = self._token, None
        return f"::{token}::\n"


def _cell(value: object) -> str:
    """Stage-derived text as one Markdown table cell: every Markdown and HTML character
    backslash-escaped (CommonMark), lines joined with ``<br>``, at most `CELL_CHARS`."""
    text = neutralise(str(value) if value is not None else "").strip()
    if len(text) > CELL_CHARS:
        text = text[: CELL_CHARS - 1] + "…"
    return "<br>".join(_MARKDOWN_PUNCTUATION.sub(r"\\\1", line) for line in text.split("\n"))


def step_summary_markdown(manifest: Mapping[str, Any]) -> str:
    """The run as Markdown for ``$GITHUB_STEP_SUMMARY``: a heading and a table of stages
    (status, stage, duration, summary), then the run's summary."""
    detail = manifest.get("status_detail")
    heading = (
        f"### codex-orchestrator: pipeline {_cell(manifest.get('pipeline_id'))} "
        f"{_cell(manifest.get('status'))}" + (f" ({_cell(detail)})" if detail else "")
    )
    lines = [
        heading,
        "",
        f"Run {_cell(manifest.get('run_id'))}, task {_cell(manifest.get('task_id'))}",
        "",
        "| status | stage | duration | summary |",
        "|---|---|---|---|",
    ]
    entries = array_objects(manifest.get("commands"))
    size = sum(len(line.encode()) + 1 for line in lines)
    for shown, entry in enumerate(entries):
        status = str(entry.get("status"))
        row = (
            f"| {MARKS.get(status, UNKNOWN_MARK)} {_cell(shown_status(entry))} "
            f"| {_cell(entry.get('id'))} "
            f"| {format_seconds(recorded_seconds(entry))} "
            f"| {_cell(entry.get('summary'))} |"
        )
        size += len(row.encode()) + 1
        if size > SUMMARY_BYTES:
            lines.append(f"| … | {len(entries) - shown} more stages | | |")
            break
        lines.append(row)
    summary = manifest.get("summary")
    if summary:
        lines += ["", _cell(summary)]
    return "\n".join(lines) + "\n"


def append_step_summary(path: Path, text: str) -> None:
    """Append ``text`` to the job summary file ``path`` (named by ``$GITHUB_STEP_SUMMARY``).

    The file belongs to the runner, outside the repository, so a link to it is followed. It
    is opened without blocking, so a FIFO without a reader fails at once instead of hanging,
    and only a regular file is written: anything else is an ``OSError`` saying so.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file; the job summary was not written")
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


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
