"""The machinery for running a run's stages at once (see docs/graphs.md).

- `MainFlow`: worker threads never touch the run's records; they post callables that the main
  flow runs, so every manifest write and event comes from one thread, in order.
- `LinkedCancellation`: a run's own cancellation, requested by the signal cancellation it is
  linked to (forwarded by the main flow) or by the run itself (``failFast`` teardown).
- `retry_delay`: the backoff before a stage's next attempt.
- `PrefixedEcho`: a stage's live output on the terminal, each line prefixed ``[stage-id]``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from codex_orchestrator.executors.base import Cancellation
from codex_orchestrator.pipelines.config import MAX_RETRY_DELAY_SECONDS
from codex_orchestrator.util.safefs import read_at

#: A partial line longer than this is echoed without waiting for its end.
ECHO_LINE_LIMIT = 64 * 1024


class MainFlow:
    """Where worker threads hand work to the thread that owns a run's records.

    `post` from a worker queues the callable and makes `wakeup_fd` readable; `post` from the
    owning thread itself runs the callable at once (a stage run inline, in sequence).
    """

    def __init__(self) -> None:
        self._owner = threading.get_ident()
        self._posted: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def post(self, work: Callable[[], None]) -> None:
        """Have the main flow run ``work`` (now, when called from the main flow itself)."""
        if threading.get_ident() == self._owner:
            work()
            return
        self._posted.put(work)
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the main flow
            os.write(self._write, b"\0")

    def wait(self, timeout: float | None, *fds: int) -> None:
        """Block until work is posted, one of ``fds`` is readable, or ``timeout`` passes."""
        select.select([self._read, *fds], [], [], timeout)

    def run_posted(self) -> None:
        """Run every callable posted so far, in order."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass
        while True:
            try:
                work = self._posted.get_nowait()
            except queue.Empty:
                return
            work()

    def close(self) -> None:
        """Release the wake-up pipe."""
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


class LinkedCancellation(Cancellation):
    """A run's own cancellation, linked to ``parent`` (the one signals request).

    The run's main flow forwards a parent request with `follow`; the run requests it alone to
    tear its stages down (``failFast``). A second signal still means "kill at once": escalation
    is read from the parent, so an executor that keeps the escalation descriptor keeps one
    that lives as long as the parent.
    """

    def __init__(self, parent: Cancellation) -> None:
        super().__init__(parent.grace_seconds)
        self.parent = parent

    @property
    def escalated(self) -> bool:
        """True after a second signal to the orchestrator."""
        return self.parent.escalated

    def wakeup_fd(self, *, escalation: bool = False) -> int:
        """This run's wake-up descriptor; the parent's for escalation."""
        if escalation:
            return self.parent.wakeup_fd(escalation=True)
        return super().wakeup_fd()

    def follow(self) -> bool:
        """Forward the parent's request, if any; True once the parent was requested."""
        if not self.parent.requested:
            return False
        if not self.requested:
            self.request(self.parent.signum or 0)
        return True


def retry_delay(first_seconds: float, retry_number: int) -> float:
    """Seconds to wait before retry ``retry_number`` (1-based): doubling, at most 60."""
    return min(first_seconds * 2.0 ** (retry_number - 1), MAX_RETRY_DELAY_SECONDS)


class PrefixedEcho:
    """Copies the new bytes of a stage's logs onto stderr, each line prefixed ``[stage-id] ``.

    Only whole lines are copied while the stage runs, so lines of stages running at once never
    interleave mid-line; `finish` copies what is left. What reaches the terminal is neutralised
    (`view.text.StreamNeutraliser`): a stage cannot retitle the window, set the clipboard or
    clear the screen through the echo.
    """

    def __init__(self, stage_id: str, *paths: Path) -> None:
        from codex_orchestrator.util.terminal_text import StreamNeutraliser, neutralise

        self.prefix = f"[{neutralise(stage_id, keep_newlines=False)}] ".encode()
        self.offsets = dict.fromkeys(paths, 0)
        self.partial = dict.fromkeys(paths, b"")
        self.safe = {path: StreamNeutraliser() for path in paths}

    def __call__(self) -> None:
        """Copy the whole lines written since the last call."""
        self._copy(final=False)

    def finish(self) -> None:
        """Copy everything left, a last partial line included."""
        self._copy(final=True)

    def _copy(self, *, final: bool) -> None:
        out = bytearray()
        for path, offset in self.offsets.items():
            try:
                chunk = read_at(path, offset, 1 << 20)
            except OSError:
                chunk = b""
            self.offsets[path] = offset + len(chunk)
            pending = self.partial[path] + self.safe[path].feed(chunk)
            lines = pending.split(b"\n")
            rest = lines.pop()
            if final or len(rest) > ECHO_LINE_LIMIT:
                if rest:
                    lines.append(rest)
                rest = b""
            self.partial[path] = rest
            for line in lines:
                out += self.prefix + line + b"\n"
        if out:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.buffer.write(bytes(out))
                sys.stderr.buffer.flush()
