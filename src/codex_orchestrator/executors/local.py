"""The local executor: each stage is ``/bin/sh -c`` in its own session on this machine.

A stage's stdout and stderr are the file descriptors of its log files, so output reaches disk
at raw speed and the orchestrator holds none of it in memory; the outcome carries the last
64 KiB of each stream, read back from the still-open descriptors. Teardown escalates: SIGTERM
to the whole process group, SIGKILL once the grace period is spent. A stage may leave a helper
running for later stages; `LocalExecutor.close` ends it with the run. See docs/resilience.md.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from codex_orchestrator.executors.base import (
    HANDLE_ENV_MARKER,
    HANDLE_HOST,
    HANDLE_KIND,
    HANDLE_PGID,
    HANDLE_PID,
    HANDLE_START_TICKS,
    LOCAL_KIND,
    RUN_ID_ENV,
    Cancellation,
    Handle,
    StageOutcome,
    StageRequest,
    recorded_start_ticks,
)
from codex_orchestrator.executors.logfiles import LogFiles
from codex_orchestrator.executors.process import (
    ExitWatcher,
    become_child_subreaper,
    end_adopted_orphans,
    end_groups,
    end_marked_processes,
    exit_code,
    group_alive,
    leftover_group_problem,
    signal_group,
    spawn_in_new_session,
    wait_until_gone,
)
from codex_orchestrator.executors.teardown import STOPPED, Teardown
from codex_orchestrator.util.console import note
from codex_orchestrator.util.procfs import host_name, process_start_ticks

KIND = LOCAL_KIND


class LocalExecutor:
    """Runs stages as local process groups; safe to call `run` from several threads."""

    name = KIND
    options: Mapping[str, str] = MappingProxyType({})

    def __init__(self, grace_seconds: float, *, subreaper: bool = False) -> None:
        """``grace_seconds``: how long `close` lets leftover helpers end after SIGTERM.

        ``subreaper``: make this process the reaper of the stages' orphaned descendants, so
        `close` can end those that left their process group and session too (Linux).
        """
        self.grace_seconds = grace_seconds
        self.host = host_name()
        self.adopts_orphans = subreaper and become_child_subreaper()
        self._groups: set[int] = set()
        self._children: set[int] = set()
        self._swept: set[str] = set()
        self._lock = threading.Lock()
        self._hurry_fd: int | None = None

    def run(
        self,
        request: StageRequest,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> StageOutcome:
        """Run ``request`` to its end; ``on_handle`` gets the stage's handle once it exists."""
        with LogFiles(request) as logs:
            return self._run(request, logs, cancellation, on_handle)

    def _run(
        self,
        request: StageRequest,
        logs: LogFiles,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> StageOutcome:
        started_at = time.time()
        started = time.monotonic()
        proc = spawn_in_new_session(
            request.command, request.cwd, request.env, logs.stdout, logs.stderr
        )
        with self._lock:
            self._groups.add(proc.pid)
            self._children.add(proc.pid)
            self._hurry_fd = cancellation.wakeup_fd(escalation=True)
        handle: dict[str, object] = {
            HANDLE_KIND: KIND,
            HANDLE_HOST: self.host,
            HANDLE_PID: proc.pid,
            HANDLE_PGID: proc.pid,
            HANDLE_START_TICKS: process_start_ticks(proc.pid),
        }
        if RUN_ID_ENV in request.env:
            handle[HANDLE_ENV_MARKER] = f"{RUN_ID_ENV}={request.env[RUN_ID_ENV]}"
        timeout = request.timeout_seconds
        teardown = Teardown(
            cancellation.grace_seconds,
            started,
            started + timeout if timeout else None,
            end_leftovers=False,
        )
        try:
            on_handle(handle)
            with ExitWatcher(proc) as watcher:
                _supervise(proc, watcher, teardown, cancellation)
        finally:
            if proc.returncode is None:  # an error above, or an unkillable stage: never leave it
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            with self._lock:
                self._children.discard(proc.pid)
        return logs.outcome(
            exit_code(proc.returncode),
            started_at,
            time.monotonic() - started,
            timed_out=teardown.timed_out,
            cancelled=teardown.reason == STOPPED,
            killed=teardown.killed,
            host=self.host,
        )

    def reap(self, handle: Handle, grace_seconds: float) -> bool:
        """End the process group a dead run's stage left behind, once verified to be it."""
        if handle.get(HANDLE_KIND) != KIND:
            return False
        if handle.get(HANDLE_HOST) != self.host:
            note(
                f"warning: not ending process group {handle.get(HANDLE_PGID)!r}: it ran on host "
                f"{handle.get(HANDLE_HOST)!r}, not this one ({self.host}); end it there by hand"
            )
            return False
        pgid, ticks = handle.get(HANDLE_PGID), recorded_start_ticks(handle)
        problem = leftover_group_problem(pgid, ticks)
        if problem is not None:
            note(f"warning: not signalling recorded process group {pgid!r}: {problem}")
            return False
        assert isinstance(pgid, int) and isinstance(ticks, int)
        ended = group_alive(pgid)
        if ended:
            end_groups([pgid], grace_seconds)
        return self._sweep_escaped(handle.get(HANDLE_ENV_MARKER), ticks, grace_seconds) or ended

    def _sweep_escaped(self, marker: object, since: int, grace_seconds: float) -> bool:
        """End a dead run's processes that escaped their group: found by the run-id marker in
        their environment and a start no earlier than the stage's (once per run)."""
        if not isinstance(marker, str) or not marker.startswith(f"{RUN_ID_ENV}="):
            return False
        with self._lock:
            if marker in self._swept:
                return False
            self._swept.add(marker)
        return end_marked_processes(marker.encode(), since, grace_seconds) > 0

    def close(self) -> None:
        """End every process group this executor started that still has live members."""
        with self._lock:
            groups, self._groups = sorted(self._groups), set()
            running = set(self._children)
        end_groups(groups, self.grace_seconds, self._hurry_fd)
        if self.adopts_orphans:
            end_adopted_orphans(running, self.grace_seconds, self._hurry_fd)


def _supervise(
    proc: subprocess.Popen[bytes],
    watcher: ExitWatcher,
    teardown: Teardown,
    cancellation: Cancellation,
) -> None:
    """Wait for the stage's shell, and for what it left when it is being ended, acting on
    ``teardown``'s decisions (see ``teardown.py`` for the rules).

    Why it is shaped like this:
    - Every deadline is on the monotonic clock, so a wall-clock step neither stops a timeout
      nor fires one early.
    - While the shell runs, the wait is one ``poll`` on the child's pidfd and the
      cancellation's wake-up pipe, so exit, timeout and a signal to the orchestrator are all
      noticed at once, from any thread (the signal handler only writes to the pipe). Once it
      exited, the group is polled (with backoff) until it is gone, or a second request.
    - A group whose shell exited on its own may keep a helper for later stages: the teardown
      leaves it be (``end_leftovers=False``), and `LocalExecutor.close` ends it with the run.
    """
    while True:
        now = time.monotonic()
        exited = proc.returncode is not None
        decision = teardown.decide(
            now,
            cancellation.requested_at,
            cancellation.escalated,
            exited,
            lambda: group_alive(proc.pid),
        )
        if decision.signal:
            signal_group(proc.pid, decision.signal)
        if decision.done:
            return
        wait = None if decision.wake_at is None else max(0.0, decision.wake_at - now)
        wake = None
        if not cancellation.escalated:  # a request seen stays readable: wait for the next one
            wake = cancellation.wakeup_fd(escalation=cancellation.requested)
        if not exited:
            watcher.wait(wait, wake)
        else:
            wait_until_gone([proc.pid], 0.0 if wait is None else wait, wake)
