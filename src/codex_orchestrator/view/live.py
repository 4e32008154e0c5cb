"""The live terminal view: one line per stage, redrawn in place from its own thread (rich).

Imported only when the view is on (see `codex_orchestrator.view.terminal`). The view reads a
snapshot of the manifest and the tails of running stages' logs; it never touches the stages'
output streams, which go to their log files whatever the view does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console, ConsoleDimensions, Group
from rich.control import Control
from rich.live import Live
from rich.segment import ControlType
from rich.text import Text

from codex_orchestrator.view.rows import Snapshot, StageRow, fit_rows, headline, stage_rows

MAX_FRAMES_PER_SECOND = 10
STYLES = {
    "pending": "dim",
    "running": "bold cyan",
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "yellow",
}


class LiveView:
    """Draws a run on stderr until closed, then leaves the full final table on screen.

    Its own thread builds a frame at most `MAX_FRAMES_PER_SECOND` times a second and writes it
    only when it differs from the one on screen (running clocks tick in whole seconds), so a
    quiet run costs almost nothing and a chatty one at most a few milliseconds a frame.
    """

    def __init__(self, snapshot: Snapshot, run_dir: Path, *, colour: bool) -> None:
        self._snapshot = snapshot
        self._run_dir = run_dir
        self._final = False
        self._shown: object = None
        #: The width the frame on screen was drawn for, and the cells of each of its lines.
        self._drawn: tuple[int, list[int]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-view", daemon=True)
        self._console = Console(
            stderr=True, no_color=not colour, highlight=False, emoji=False, markup=False
        )
        self._live = Live(
            console=self._console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=True,
        )

    def __enter__(self) -> LiveView:
        self._live.start()
        self._draw()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._final = True
        self._draw()
        self._live.stop()

    def _loop(self) -> None:
        while not self._stop.wait(1 / MAX_FRAMES_PER_SECOND):
            self._draw()

    def _draw(self) -> None:
        """Show the current frame if it changed; a bad snapshot keeps the frame on screen."""
        try:
            manifest = self._snapshot()
            if manifest is None:
                return
            key, lines, width = self._frame(manifest)
        except Exception:  # a torn or tampered manifest must not kill the drawing thread
            return
        if key != self._shown:
            self._shown = key
            self._erase_reflowed(width)
            self._live.update(Group(*lines), refresh=True)
            self._drawn = (width, [min(line.cell_len, width) for line in lines])

    def _erase_reflowed(self, width: int) -> None:
        """After the terminal got narrower, erase the rows the frame on screen now takes
        beyond its line count.

        A terminal that narrows re-wraps the lines on screen: a line drawn for 100 columns
        takes two rows of 50. The redraw moves up one row per line it drew; the rows in excess
        would stay on screen as a stale partial frame, so they are erased first, from the
        bottom up, leaving the cursor where the redraw expects the frame's last line.
        """
        if self._drawn is None or width >= self._drawn[0]:
            return
        rows = sum(max(1, -(-cells // width)) for cells in self._drawn[1])
        extra = rows - len(self._drawn[1])
        if extra > 0:
            erase_up = ((ControlType.ERASE_IN_LINE, 2), (ControlType.CURSOR_UP, 1))
            self._console.control(Control(*(erase_up * extra)))

    def _frame(self, manifest: Mapping[str, Any]) -> tuple[object, list[Text], int]:
        """The frame's lines, what identifies them (same key, same pixels), and the width they
        were cut to."""
        rows = stage_rows(manifest, self._run_dir)
        overflow = ""
        size = self._measure()
        if not self._final:
            rows, overflow = fit_rows(rows, max(1, size.height - 2))
        title = headline(manifest)
        width = min(max((len(row.stage_id) for row in rows), default=0), 32)
        lines = [_line(Text(title, style="bold"))]
        lines += [self._row(row, width) for row in rows]
        if overflow:
            lines.append(_line(Text(overflow, style="dim")))
        return (title, tuple(rows), overflow, size, self._final), lines, size.width

    def _measure(self) -> ConsoleDimensions:
        """The terminal's size now, asked of the terminal itself.

        ``COLUMNS``/``LINES`` (which rich would trust first) are often exported once and go
        stale when the window is resized; a frame wider than the window wraps and breaks the
        redraw.
        """
        try:
            columns, lines = os.get_terminal_size(self._console.file.fileno())
        except (OSError, ValueError, AttributeError):
            return self._console.size
        if columns > 0 and lines > 0:  # a terminal that never got a size reports 0x0
            self._console.size = (columns, lines)
        return self._console.size

    def _row(self, row: StageRow, width: int) -> Text:
        style = STYLES.get(row.status, "")
        text = Text()
        text.append(f"{row.mark} ", style=style)
        text.append(f"{row.stage_id:<{width}} ", style="bold" if row.status == "running" else "")
        text.append(f"{row.clock:>7}  ", style="dim")
        text.append(row.detail, style="dim" if row.status != "failed" else style)
        return _line(text)


def _line(text: Text) -> Text:
    """Cut to the terminal width, never wrapped (a long line would break the redraw)."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text
