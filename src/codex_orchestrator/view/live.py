"""The live terminal view: one line per stage, redrawn in place from its own thread (rich).

Imported only when the view is on (see `codex_orchestrator.view.terminal`). The view reads a
snapshot of the manifest and the tails of running stages' logs; it never touches the stages'
output streams, which go to their log files whatever the view does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from codex_orchestrator.view.rows import StageRow, fit_rows, headline, stage_rows

REFRESH_PER_SECOND = 8
STYLES = {
    "pending": "dim",
    "running": "bold cyan",
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "yellow",
}

Snapshot = Callable[[], Mapping[str, Any] | None]


class LiveView:
    """Draws a run on stderr until closed, then leaves the full final table on screen."""

    def __init__(self, snapshot: Snapshot, run_dir: Path, *, colour: bool) -> None:
        self._snapshot = snapshot
        self._run_dir = run_dir
        self._final = False
        self._lock = threading.Lock()
        self._last: RenderableType = Text("waiting for the run's manifest…")
        self._console = Console(
            stderr=True, no_color=not colour, highlight=False, emoji=False, markup=False
        )
        self._live = Live(
            console=self._console,
            get_renderable=self._render,
            refresh_per_second=REFRESH_PER_SECOND,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=True,
        )

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._final = True
        self._live.stop()

    def _render(self) -> RenderableType:
        """The current frame; a bad snapshot keeps the previous frame (the thread never dies)."""
        with self._lock:
            try:
                manifest = self._snapshot()
                if manifest is not None:
                    self._last = self._frame(manifest)
            except Exception:  # a torn or tampered manifest must not kill the drawing thread
                pass
            return self._last

    def _frame(self, manifest: Mapping[str, Any]) -> RenderableType:
        rows = stage_rows(manifest, self._run_dir)
        overflow = ""
        if not self._final:
            rows, overflow = fit_rows(rows, max(1, self._console.height - 2))
        width = max((len(row.stage_id) for row in rows), default=0)
        lines = [_line(Text(headline(manifest), style="bold"))]
        lines += [self._row(row, min(width, 32)) for row in rows]
        if overflow:
            lines.append(_line(Text(overflow, style="dim")))
        return Group(*lines)

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
