"""The local executor: each stage is ``/bin/sh -c`` in its own session on this machine.

A stage's stdout and stderr are the file descriptors of its log files, so output reaches disk
at raw speed and the orchestrator holds none of it in memory; the outcome carries the last
64 KiB of each stream, read back from the still-open descriptors. Teardown escalates: SIGTERM
to the whole process group, SIGKILL once the grace period is spent. A stage may leave a helper
running for later stages; `LocalExecutor.close` ends it with the run. See docs/resilience.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from codex_orchestrator.executors.base import (
    RUN_ID_ENV,
    TAIL_BYTES,
    Cancellation,
    Handle,
    StageOutcome,
    StageRequest,
)
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
)
from codex_orchestrator.util.console import note
from codex_orchestrator.util.procfs import host_name, process_start_ticks
from codex_orchestrator.util.safefs import open_no_follow

KIND = "local"


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
        stdout = _open_log(request.stdout_path)
        try:
            stderr = _open_log(request.stderr_path)
            try:
                return self._run(request, stdout, stderr, cancellation, on_handle)
            finally:
                os.close(stderr)
        finally:
            os.close(stdout)

    def _run(
        self,
        request: StageRequest,
        stdout: int,
        stderr: int,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> StageOutcome:
        started_at = time.time()
        started = time.monotonic()
        proc = spawn_in_new_session(request.command, request.cwd, request.env, stdout, stderr)
        with self._lock:
            self._groups.add(proc.pid)
            self._children.add(proc.pid)
            self._hurry_fd = cancellation.wakeup_fd(escalation=True)
        handle: Handle = {
            "kind": KIND,
            "host": self.host,
            "pid": proc.pid,
            "pgid": proc.pid,
            "pid_start_ticks": process_start_ticks(proc.pid),
        }
        if RUN_ID_ENV in request.env:
            handle["env_marker"] = f"{RUN_ID_ENV}={request.env[RUN_ID_ENV]}"
        try:
            on_handle(handle)
            with ExitWatcher(proc) as watcher:
                ending = _supervise(proc, watcher, request.timeout_seconds, cancellation, started)
        finally:
            if proc.returncode is None:  # an error above: never leave the stage running
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            with self._lock:
                self._children.discard(proc.pid)
        stdout_tail, stdout_bytes = _tail(stdout)
        stderr_tail, stderr_bytes = _tail(stderr)
        return StageOutcome(
            exit_code=exit_code(proc.returncode),
            started_at=started_at,
            duration_seconds=time.monotonic() - started,
            timed_out=ending.timed_out,
            cancelled=ending.cancelled,
            killed=ending.killed,
            lost=False,
            stdout_tail=stdout_tail,
            stderr_tail=stderr_tail,
            stdout_bytes=stdout_bytes,
            stderr_bytes=stderr_bytes,
            host=self.host,
        )

    def reap(self, handle: Handle, grace_seconds: float) -> bool:
        """End the process group a dead run's stage left behind, once verified to be it."""
        if handle.get("kind") != KIND:
            return False
        if handle.get("host") != self.host:
            note(
                f"warning: not ending process group {handle.get('pgid')!r}: it ran on host "
                f"{handle.get('host')!r}, not this one ({self.host}); end it there by hand"
            )
            return False
        pgid, ticks = handle.get("pgid"), handle.get("pid_start_ticks")
        problem = leftover_group_problem(pgid, ticks)
        if problem is not None:
            note(f"warning: not signalling recorded process group {pgid!r}: {problem}")
            return False
        assert isinstance(pgid, int) and isinstance(ticks, int)
        ended = group_alive(pgid)
        if ended:
            end_groups([pgid], grace_seconds)
        return self._sweep_escaped(handle.get("env_marker"), ticks, grace_seconds) or ended

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


class _Ending(NamedTuple):
    timed_out: bool
    cancelled: bool
    killed: bool


def _supervise(
    proc: subprocess.Popen[bytes],
    watcher: ExitWatcher,
    timeout: float | None,
    cancellation: Cancellation,
    started: float,
) -> _Ending:
    """Wait for the stage's shell, enforcing its timeout and the cancellation.

    Why it is shaped like this:
    - Every deadline is on the monotonic clock, so a wall-clock step neither stops a timeout
      nor fires one early.
    - The wait is one ``poll`` on the child's pidfd and the cancellation's wake-up pipe, so
      exit, timeout and a signal to the orchestrator are all noticed at once, from any thread
      (the signal handler only writes to the pipe).
    - The grace period counts from the moment cancellation was requested, not from when this
      loop noticed it; a second request (a second signal) kills at once.
    - When the shell exits, the rest of a torn-down group is ended too; a group whose shell
      exited normally may keep a helper for later stages, ended by `LocalExecutor.close`.
    """
    deadline = started + timeout if timeout else None
    timed_out = cancelled = killed = False
    kill_at: float | None = None
    while True:
        wake = None if killed else cancellation.wakeup_fd(escalation=kill_at is not None)
        if watcher.wait(None if killed else _next_wait(deadline, kill_at), wake):
            break
        now = time.monotonic()
        if kill_at is None:
            if deadline is not None and now >= deadline:
                timed_out, begun = True, now
            elif cancellation.requested:
                cancelled, begun = True, max(cancellation.requested_at, started)
            else:
                continue
            signal_group(proc.pid, signal.SIGTERM)
            kill_at = begun + cancellation.grace_seconds
        elif not killed and (now >= kill_at or cancellation.escalated):
            killed = True
            signal_group(proc.pid, signal.SIGKILL)
    if kill_at is None and cancellation.requested:
        cancelled = True
        kill_at = max(cancellation.requested_at, started) + cancellation.grace_seconds
    if kill_at is not None:
        grace = 0.0 if killed or cancellation.escalated else kill_at - time.monotonic()
        hurry = cancellation.wakeup_fd(escalation=True)
        killed = end_groups([proc.pid], max(0.0, grace), hurry) or killed
    return _Ending(timed_out, cancelled, killed)


def _next_wait(deadline: float | None, kill_at: float | None) -> float | None:
    """Seconds until the supervisor must next act on its own (None: only on an event)."""
    moment = kill_at if kill_at is not None else deadline
    return None if moment is None else max(0.0, moment - time.monotonic())


def _open_log(path: os.PathLike[str]) -> int:
    """Open a stage log for writing; a link planted in its place is refused, never truncated."""
    return open_no_follow(Path(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC)


def _tail(fd: int, limit: int = TAIL_BYTES) -> tuple[bytes, int]:
    """The last ``limit`` bytes written to ``fd`` and the total size."""
    size = os.fstat(fd).st_size
    length = min(size, limit)
    return os.pread(fd, length, size - length), size
