"""Signals while a run is driven: SIGINT, SIGTERM and SIGHUP cancel it, SIGUSR1 wakes it.

The kernel may hand a signal sent to the process to any thread that does not block it, while
Python runs signal handlers in the main thread only, and only once that thread runs Python code
again: a main thread blocked in a wait for a stage would act on a signal only when the stage
ended by itself. So the Python-level handlers do nothing; the C-level handler, which runs in
whatever thread took the signal, writes the signal's number to a pipe (``signal.set_wakeup_fd``)
and a dispatcher thread acts on it at once:

- SIGINT, SIGTERM, SIGHUP: `Cancellation.request` (a second one means "kill at once");
- SIGUSR1 (`WAKE_SIGNAL`, sent by ``cancel`` to a driver it verified through the kernel):
  look at the cancel requests of the runs this process drives (`cancel_request.act_on_requests`),
  which cancels only the run that was asked for, a child run included. The dispatcher also
  looks at them every `REQUEST_POLL_SECONDS`, so a request is honoured even when no signal
  could be sent (a driver the canceller could not verify).

No thread may run while ``start --detach`` forks: the dispatcher is stopped before any
``os.fork`` and started again in both processes after it, the child with a pipe of its own (a
shared pipe would let one process read the other's signals).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # every command imports this module: keep it light
    from codex_orchestrator.executors.base import Cancellation

#: The signal ``cancel`` sends a run's driver: "look at your cancel requests".
WAKE_SIGNAL = signal.SIGUSR1
CANCELLING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
REQUEST_POLL_SECONDS = 0.2
_STOP = 0  # a byte no signal has: the dispatcher's "stop"


def absorb_wake_signal() -> None:
    """Make `WAKE_SIGNAL` harmless to this process (its default action would end it).

    Every command calls this first: a process that holds a run's driver lock outside a
    `SignalGuard` (``resume`` before it drives, ``cancel`` finishing a dead run) may be woken
    by a concurrent ``cancel``; the request it carries is read when the run is driven. A Python
    handler, unlike ``SIG_IGN``, is reset for the programs stages exec.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(WAKE_SIGNAL, _ignore)


class SignalGuard:
    """Context manager routing the cancelling signals to a `Cancellation` and the wake signal
    to the cancel requests (main thread only)."""

    SIGNALS = (*CANCELLING, WAKE_SIGNAL)

    def __init__(self, cancellation: Cancellation) -> None:
        self.cancellation = cancellation
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd: int | None = None
        self._read = self._write = -1
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SignalGuard:
        global _active
        if threading.current_thread() is not threading.main_thread() or _active is not None:
            return self
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, _ignore)
        self._previous_wakeup_fd = self._new_pipe()
        _active = self
        self._start()
        return self

    def __exit__(self, *_: object) -> None:
        global _active
        if self._previous_wakeup_fd is None:
            return
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._stop()
        _active = None
        self._close_pipe()

    def _new_pipe(self) -> int:
        """A fresh signal pipe, made the wake-up fd; returns the previous wake-up fd."""
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        return signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def _close_pipe(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._dispatch, name="signals", daemon=True)
        self._thread.start()

    def _stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._write, bytes([_STOP]))
            thread.join()

    def _dispatch(self) -> None:
        from codex_orchestrator.records.cancel_request import act_on_requests

        while True:
            ready, _, _ = select.select([self._read], [], [], REQUEST_POLL_SECONDS)
            received = os.read(self._read, 512) if ready else b""
            for signum in received:
                if signum == _STOP:
                    return
                if signum in CANCELLING:
                    self.cancellation.request(signum)
            act_on_requests()


#: The guard entered in this process (one at a time), whose dispatcher pauses over a fork.
_active: SignalGuard | None = None


def _ignore(_signum: int, _frame: object) -> None:
    """The Python-level handler: the dispatcher thread does the work (see the module doc)."""


def _before_fork() -> None:
    if _active is not None:
        _active._stop()


def _after_fork_in_parent() -> None:
    if _active is not None:
        _active._start()


def _after_fork_in_child() -> None:
    if _active is not None:
        _active._close_pipe()
        if threading.current_thread() is threading.main_thread():
            _active._new_pipe()
        _active._start()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
