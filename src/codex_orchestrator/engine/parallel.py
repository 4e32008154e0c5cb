"""The machinery for running a run's stages at once (see docs/graphs.md).

- `MainFlow`: worker threads never touch the run's records; they post callables that the main
  flow runs, so every manifest write and event comes from one thread, in order.
- `LinkedCancellation`: a run's own cancellation, requested by the signal cancellation it is
  linked to (forwarded by the main flow) or by the run itself (``failFast`` teardown).
- `retry_delay`: the backoff before a stage's next attempt.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
from collections.abc import Callable

from codex_orchestrator.executors.base import Cancellation
from codex_orchestrator.pipelines.config import MAX_RETRY_DELAY_SECONDS


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
