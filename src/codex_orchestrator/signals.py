"""Routing SIGINT, SIGTERM and SIGHUP to a `Cancellation` while a run is driven.

The handler only sets the flag (see `Cancellation.request`); the executors end their stages.
"""

from __future__ import annotations

import signal
import threading

from codex_orchestrator.executor import Cancellation


class SignalGuard:
    """Context manager routing the cancelling signals to a `Cancellation` (main thread only).

    Python runs signal handlers in the main thread only, but the kernel may hand a signal sent
    to the process to any thread that does not block it (it does, e.g. a SIGTERM that arrives
    after SIGSTOP/SIGCONT). The main thread, blocked in a wait for a stage, would then run the
    handler only when the stage ended by itself. So the C-level handler, which runs in whatever
    thread took the signal, also writes to the cancellation's wake-up pipe
    (``signal.set_wakeup_fd``), which every wait for a stage watches: the main thread wakes,
    and on taking the GIL back runs the pending handler (CPython recomputes its eval breaker
    then, bpo-40010).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, cancellation: Cancellation) -> None:
        self.cancellation = cancellation
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd: int | None = None

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            self._previous_wakeup_fd = signal.set_wakeup_fd(
                self.cancellation.signal_wakeup_fd(), warn_on_full_buffer=False
            )
        return self

    def __exit__(self, *_: object) -> None:
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: object) -> None:
        self.cancellation.request(signum)
