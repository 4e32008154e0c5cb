"""Routing SIGINT, SIGTERM and SIGHUP to a `Cancellation` while a run is driven.

The handler only sets the flag (see `Cancellation.request`); the executors end their stages.
"""

from __future__ import annotations

import signal
import threading

from codex_orchestrator.executor import Cancellation


class SignalGuard:
    """Context manager routing the cancelling signals to a `Cancellation` (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, cancellation: Cancellation) -> None:
        self.cancellation = cancellation
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: object) -> None:
        self.cancellation.request(signum)
