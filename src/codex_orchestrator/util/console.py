"""How commands talk to the user: one JSON document on stdout, or text; notes on stderr.

Everything printed here may carry text a stage or a hand-edited record chose (summaries, stage
ids, history entries), so text goes through the one terminal neutraliser
(`view.text.neutralise`) and JSON through the one encoder (`jsonio.json_text`), which writes
the characters a terminal could act on as escapes.

A closed standard stream (``start >&-``) or a reader that goes away (``status RUN | head -0``)
is not an error: what cannot be shown is dropped, and the command finishes its work and exits
with its usual code. Records never depend on the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from codex_orchestrator.util.jsonio import json_text
from codex_orchestrator.util.terminal_text import neutralise


class Reporter:
    """Prints a command's result as text or as exactly one JSON document."""

    def __init__(self, fmt: str = "text") -> None:
        self.json = fmt == "json"

    def result(self, document: dict[str, Any], text: str) -> None:
        """Print the command's result: ``document`` in JSON mode, else ``text``."""
        if self.json:
            shown = json_text(document) + "\n"
        else:
            shown = neutralise(text if text.endswith("\n") else text + "\n")
        try:
            sys.stdout.write(shown)
            sys.stdout.flush()
        except (OSError, ValueError):
            _silence(sys.stdout, 1)

    def error(self, message: str, exit_code: int) -> None:
        """Report a failure as one line on stderr (and one JSON document in JSON mode)."""
        note(f"error: {message}")
        if self.json:
            self.result({"error": message, "exit_code": exit_code}, "")


def note(message: str) -> None:
    """Write a progress or warning line to stderr (dropped when nobody can read it)."""
    write_stderr(neutralise(message.rstrip("\n")) + "\n")


def write_stderr(text: str) -> None:
    """Write ``text``, already made safe for a terminal, to stderr and flush it (dropped when
    nobody can read it)."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        _silence(sys.stderr, 2)


def ensure_standard_streams() -> None:
    """Give closed descriptors 0-2 ``/dev/null`` before the tool opens any file; make output
    encodable whatever it holds.

    Otherwise the first file the tool opens (a lock, a manifest) would get descriptor 1 or 2,
    and output meant for the terminal would be written into it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    # Records may hold lone surrogates (see `jsonio.encode_record`); show them as escapes.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _silence(stream: Any, fd: int) -> None:
    """After a failed write (closed pipe), point ``fd`` at /dev/null so that later writes, and
    the interpreter's flush at exit, succeed quietly."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except OSError:
        return
    with contextlib.suppress(OSError, ValueError):
        stream.flush()
