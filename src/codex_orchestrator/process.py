"""Running one stage command: its own process group, output straight to disk, graceful teardown.

This module is the stage-execution interface of spec section 10: `LocalExecutor.run` takes a
`StageRequest` (what to run, where its output goes, its timeout) and a `Cancellation`, and
returns a `StageOutcome`. A distributed executor can implement the same ``run`` method.

The stage's stdout and stderr are file descriptors of its log files, so output reaches disk at
raw speed and the orchestrator holds none of it in memory; the outcome carries the last 64 KiB
of each stream, read back from disk. Teardown escalates gracefully: SIGTERM to the whole
process group, then SIGKILL once the grace period is spent.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple, Protocol

from codex_orchestrator.procfs import live_group_members, process_start_ticks

TAIL_BYTES = 64 * 1024
POLL_SLICE_SECONDS = 0.1


class StageRequest(NamedTuple):
    """What to run, where, with which environment, where output goes, and for how long."""

    command: str
    cwd: Path
    env: Mapping[str, str]
    stdout_path: Path
    stderr_path: Path
    timeout_seconds: float | None = None


class StageOutcome:
    """How a stage process ended; the executor fills it in as the stage runs."""

    def __init__(self, pid: int, started_at: float) -> None:
        self.pid = pid
        self.pgid = pid
        self.started_at = started_at
        self.ended_at = started_at
        self.exit_code = 0
        self.timed_out = False
        self.cancelled_by: int | None = None
        self.killed = False
        self.stdout_tail = b""
        self.stderr_tail = b""
        self.stdout_bytes = 0
        self.stderr_bytes = 0

    @property
    def duration_seconds(self) -> float:
        """Wall time of the stage process."""
        return self.ended_at - self.started_at


class Cancellation:
    """Shared cancellation state, set from signal handlers, read by the executor.

    The handler only records the signal and signals the live process groups; all bookkeeping
    happens in the main flow, so a signal never interrupts a file write.
    """

    def __init__(self, grace_seconds: float = 5.0) -> None:
        self.grace_seconds = grace_seconds
        self.signum: int | None = None
        self.signalled_at = 0.0
        self.signal_count = 0
        self.groups: set[int] = set()

    @property
    def requested(self) -> bool:
        """True once a cancelling signal arrived."""
        return self.signum is not None

    def trigger(self, signum: int) -> None:
        """Record ``signum``; first time SIGTERM the live groups, after that SIGKILL them."""
        self.signal_count += 1
        if self.signum is None:
            self.signum = signum
            self.signalled_at = time.time()
        sig = signal.SIGTERM if self.signal_count == 1 else signal.SIGKILL
        for pgid in list(self.groups):
            signal_group(pgid, sig)


class Executor(Protocol):
    """Runs one stage: the interface a distributed executor would implement."""

    def run(
        self,
        request: StageRequest,
        cancellation: Cancellation,
        on_spawn: Callable[[int], None],
        on_tick: Callable[[], None] | None = None,
    ) -> StageOutcome: ...


class LocalExecutor:
    """Runs a stage as a local ``/bin/sh -c`` process in a new session (its own group)."""

    def run(
        self,
        request: StageRequest,
        cancellation: Cancellation,
        on_spawn: Callable[[int], None],
        on_tick: Callable[[], None] | None = None,
    ) -> StageOutcome:
        """Run ``request``; ``on_spawn(pid)`` is called once the process exists.

        The log files stay open here until the stage ends, so their tails are read back without
        reopening them.
        """
        stdout = _open_log(request.stdout_path)
        try:
            stderr = _open_log(request.stderr_path)
            try:
                return self._run(request, stdout, stderr, cancellation, on_spawn, on_tick)
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
        on_spawn: Callable[[int], None],
        on_tick: Callable[[], None] | None,
    ) -> StageOutcome:
        started = time.time()
        proc = subprocess.Popen(
            ["/bin/sh", "-c", request.command],
            cwd=request.cwd,
            env=dict(request.env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        cancellation.groups.add(proc.pid)
        outcome = StageOutcome(proc.pid, started)
        try:
            on_spawn(proc.pid)
            if cancellation.requested:
                signal_group(proc.pid, signal.SIGTERM)
            _supervise(proc, request.timeout_seconds, cancellation, outcome, on_tick)
        finally:
            if proc.returncode is None:
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        outcome.ended_at = time.time()
        outcome.exit_code = _exit_code(proc.returncode)
        outcome.stdout_tail, outcome.stdout_bytes = _tail(stdout)
        outcome.stderr_tail, outcome.stderr_bytes = _tail(stderr)
        return outcome


def _open_log(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)


def _tail(fd: int, limit: int = TAIL_BYTES) -> tuple[bytes, int]:
    """The last ``limit`` bytes written to ``fd`` and the total size."""
    size = os.fstat(fd).st_size
    length = min(size, limit)
    return os.pread(fd, length, size - length), size


def _supervise(
    proc: subprocess.Popen[bytes],
    timeout: float | None,
    cancellation: Cancellation,
    outcome: StageOutcome,
    on_tick: Callable[[], None] | None,
) -> None:
    """Wait for ``proc``, enforcing the timeout and cancellation with graceful escalation.

    On timeout or cancellation the whole group gets SIGTERM; SIGKILL follows once the grace
    period is spent. After the shell exits, the rest of a torn-down group is ended too.
    """
    deadline = outcome.started_at + timeout if timeout else None
    kill_at: float | None = None
    with _ExitWatcher(proc) as watcher:
        while not watcher.wait(_next_wait(deadline, kill_at, outcome.killed, on_tick)):
            if on_tick is not None:
                on_tick()
            now = time.time()
            if kill_at is None:
                if deadline is not None and now >= deadline:
                    outcome.timed_out = True
                elif cancellation.requested:
                    outcome.cancelled_by = cancellation.signum
                    now = max(cancellation.signalled_at, outcome.started_at)
                else:
                    continue
                signal_group(proc.pid, signal.SIGTERM)
                kill_at = now + cancellation.grace_seconds
            elif now >= kill_at and not outcome.killed:
                outcome.killed = True
                signal_group(proc.pid, signal.SIGKILL)
    if kill_at is None and cancellation.requested:
        outcome.cancelled_by = cancellation.signum
        kill_at = max(cancellation.signalled_at, outcome.started_at) + cancellation.grace_seconds
    if kill_at is not None:
        grace = 0.0 if outcome.killed else max(0.0, kill_at - time.time())
        outcome.killed = end_group(proc.pid, grace) or outcome.killed
    if on_tick is not None:
        on_tick()


def _next_wait(
    deadline: float | None, kill_at: float | None, killed: bool, on_tick: object
) -> float:
    """Seconds until the next moment the supervisor must act (bounded by the poll slice)."""
    now = time.time()
    waits = [POLL_SLICE_SECONDS * (3 if on_tick is None else 1)]
    if kill_at is None and deadline is not None:
        waits.append(max(0.0, deadline - now))
    if kill_at is not None and not killed:
        waits.append(max(0.0, kill_at - now))
    return min(waits)


class _ExitWatcher:
    """Waits for a child's exit with a timeout, via a pidfd where the kernel offers one."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.poller: select.poll | None = None
        self.pidfd = -1

    def __enter__(self) -> _ExitWatcher:
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
            self.poller = select.poll()
            self.poller.register(self.pidfd, select.POLLIN)
        except (AttributeError, OSError):
            self.poller = None
        return self

    def __exit__(self, *_: object) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)

    def wait(self, seconds: float) -> bool:
        """Return True once the child has exited (and is reaped), False after ``seconds``."""
        if self.poller is not None:
            if self.poller.poll(max(0, int(seconds * 1000))):
                self.proc.wait()
                return True
            return False
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True


def _exit_code(returncode: int) -> int:
    """Shell convention: a process killed by signal N reports 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` exists, zombies aside."""
    if not signal_group(pgid, 0):
        return False
    members = live_group_members(pgid)
    return True if members is None else bool(members)


def end_group(pgid: int, grace_seconds: float) -> bool:
    """End a process group: SIGTERM, wait up to ``grace_seconds``, then SIGKILL.

    Returns True when the group had to be killed with SIGKILL.
    """
    if not signal_group(pgid, signal.SIGTERM):
        return False
    deadline = time.monotonic() + grace_seconds
    delay = 0.005
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    if not signal_group(pgid, signal.SIGKILL):
        return False
    deadline = time.monotonic() + 2.0
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return True


def end_leftover_group(pgid: int, leader_start_ticks: int | None, grace_seconds: float) -> bool:
    """End a process group a dead run left behind, unless its id now belongs to someone else.

    Linux never reuses a pid while a process group of that id exists, so a live group whose
    leader is gone is still ours; a live leader must have the recorded start time.
    """
    if not group_alive(pgid):
        return False
    current = process_start_ticks(pgid)
    if current is not None and leader_start_ticks is not None and current != leader_start_ticks:
        return False
    end_group(pgid, grace_seconds)
    return True


class SignalGuard:
    """Context manager routing SIGINT, SIGTERM and SIGHUP to a `Cancellation` (main thread)."""

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
        self.cancellation.trigger(signum)
