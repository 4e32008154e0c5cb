"""The run heartbeat: a thread that proves the orchestrator is alive.

Every ``interval`` seconds it rewrites ``.heartbeat``; the manifest is persisted by the
heartbeat at most once per throttle period (counted from the last manifest write of any kind);
between ticks it writes a stage transition the manifest store deferred, as soon as the store's
write budget allows.
Ticks run one at a time on this thread and take the manifest store's lock, so heartbeat writes
never overlap each other or the main flow's forced flushes. A failed tick is logged with the
run id and retried on the next tick; it never stops the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from codex_orchestrator.records.manifest import ManifestStore


class Heartbeat:
    """Ticks in a daemon thread between `start` and `stop`."""

    def __init__(
        self,
        store: ManifestStore,
        interval_seconds: float,
        throttle_seconds: float,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self.store = store
        self.interval = interval_seconds
        self.throttle = throttle_seconds
        self.on_failure = on_failure
        self.ticks = 0
        self.manifest_writes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Write a first beat now and start ticking."""
        self.tick()
        self.store.on_deferred = self._wake.set
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and wait for an in-flight tick to finish."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.store.on_deferred = None

    def tick(self) -> None:
        """One beat; failures are reported, never raised."""
        self.ticks += 1
        try:
            if self.store.beat(self.throttle):
                self.manifest_writes += 1
        except Exception as error:  # a heartbeat must never crash the run
            self.failures += 1
            self.on_failure(error)

    def _loop(self) -> None:
        """Tick every interval; in between, write a deferred stage transition as soon as the
        manifest's write budget allows (so a reader never waits a whole tick for it)."""
        next_tick = time.monotonic() + self.interval
        flushing = True  # after a failed flush, wait for the next tick (no hot retry loop)
        while True:
            wait = next_tick - time.monotonic()
            due = self.store.flush_due_in() if flushing else None
            self._wake.wait(max(0.0, wait if due is None else min(wait, due)))
            self._wake.clear()
            if self._stop.is_set():
                return
            if time.monotonic() >= next_tick:
                self.tick()
                next_tick = time.monotonic() + self.interval
                flushing = True
                continue
            if not flushing:
                continue
            try:
                self.store.flush_if_due()
            except Exception as error:  # reported like a failed tick, never raised
                self.failures += 1
                flushing = False
                self.on_failure(error)
