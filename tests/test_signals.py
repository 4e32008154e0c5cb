"""SignalGuard: the cancelling signals reach the run whichever thread the kernel hands them to."""

from __future__ import annotations

import select
import signal
import threading
import time

from codex_orchestrator.engine.signals import SignalGuard
from codex_orchestrator.executors.base import Cancellation


def test_a_signal_taken_by_another_thread_cancels_at_once() -> None:
    assert threading.current_thread() is threading.main_thread()  # handlers need it
    cancellation = Cancellation(grace_seconds=1)
    hold = threading.Event()
    bystander = threading.Thread(target=hold.wait, daemon=True)  # the thread that takes it
    bystander.start()
    assert bystander.ident is not None
    sender = threading.Timer(0.2, signal.pthread_kill, (bystander.ident, signal.SIGTERM))
    try:
        with SignalGuard(cancellation):
            sender.start()
            began = time.monotonic()
            # A stage's wait: it watches the wake-up pipe and nothing else would end it.
            ready, _, _ = select.select([cancellation.wakeup_fd()], [], [], 10)
            waited = time.monotonic() - began
            recorded = cancellation.signum
    finally:
        sender.join()
        hold.set()
        bystander.join()
        cancellation.close()
    assert ready, "the waiting thread was not woken"
    assert waited < 5
    assert recorded == signal.SIGTERM


def test_the_guard_puts_back_the_previous_wakeup_fd_and_handlers() -> None:
    cancellation = Cancellation(grace_seconds=1)
    before = signal.getsignal(signal.SIGTERM)
    previous_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(previous_fd)
    try:
        with SignalGuard(cancellation):
            assert signal.getsignal(signal.SIGTERM) is not before
            guard_fd = signal.set_wakeup_fd(-1)
            assert guard_fd not in (-1, previous_fd)
            signal.set_wakeup_fd(guard_fd)
        assert signal.set_wakeup_fd(previous_fd) == previous_fd
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        cancellation.close()
