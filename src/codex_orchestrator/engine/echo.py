"""A stage's output, copied from its logs while it runs, as whole neutralised lines.

The stage writes its logs; a thread beside it (`echoing`) reads what is new every
`ECHO_INTERVAL_SECONDS` and hands whole lines to an `EchoSink`, which decides how they are
shown (``view.ci_output``: ``[stage] `` prefixes, GitHub Actions groups). Lines only: the lines
of stages running at once never interleave mid-line. Everything passes the one terminal
neutraliser (`StreamNeutraliser`) first, so a stage cannot retitle the window, set the
clipboard or clear the screen through the echo, and a carriage return ends a line rather than
rewinding it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from codex_orchestrator.util.safefs import read_at
from codex_orchestrator.util.terminal_text import StreamNeutraliser

#: How often the echo copies new log bytes.
ECHO_INTERVAL_SECONDS = 0.1
#: A partial line longer than this is echoed without waiting for its end.
ECHO_LINE_LIMIT = 64 * 1024
_READ_BYTES = 1 << 20


class EchoSink(Protocol):
    """Where the lines of running stages go (one sink for every stage of an invocation)."""

    def lines(self, stage_id: str, lines: list[str]) -> None:
        """Show whole, neutralised ``lines`` (no line ends) that stage ``stage_id`` wrote."""

    def stage_ended(self, stage_id: str) -> None:
        """Stage ``stage_id`` wrote its last line."""

    def close(self) -> None:
        """The run is over: end whatever the sink left open, before the summary prints."""


class StageEcho:
    """Copies the new bytes of one stage's logs to a sink, line by line."""

    def __init__(self, sink: EchoSink, stage_id: str, *paths: Path) -> None:
        self.sink = sink
        self.stage_id = stage_id
        self.offsets = dict.fromkeys(paths, 0)
        self.partial = dict.fromkeys(paths, "")
        self.safe = {path: StreamNeutraliser() for path in paths}

    def copy(self, *, final: bool = False) -> None:
        """Copy the whole lines written since the last call; with ``final``, also a last
        partial line."""
        out: list[str] = []
        for path, offset in self.offsets.items():
            try:
                chunk = read_at(path, offset, _READ_BYTES)
            except OSError:
                chunk = b""
            self.offsets[path] = offset + len(chunk)
            pending = self.partial[path] + self.safe[path].feed(chunk).decode("utf-8")
            lines = pending.split("\n")
            rest = lines.pop()
            if final or len(rest) > ECHO_LINE_LIMIT:
                if rest:
                    lines.append(rest)
                rest = ""
            self.partial[path] = rest
            out += lines
        if out:
            self.sink.lines(self.stage_id, out)


@contextmanager
def echoing(sink: EchoSink | None, stage_id: str, *paths: Path) -> Iterator[None]:
    """Echo stage ``stage_id``'s logs ``paths`` to ``sink`` while the block runs (nothing
    without a sink); what is left is copied, and the stage ended, when the block ends."""
    if sink is None:
        yield
        return
    echo = StageEcho(sink, stage_id, *paths)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(ECHO_INTERVAL_SECONDS):
            echo.copy()

    thread = threading.Thread(target=loop, name="output-echo", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        echo.copy(final=True)
        sink.stage_ended(stage_id)
