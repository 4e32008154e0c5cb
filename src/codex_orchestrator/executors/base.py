"""The stage-execution boundary: what the runner asks of an executor, and what it gets back.

The runner knows nothing of pids, process groups or hosts. It hands an executor a
`StageRequest` and a `Cancellation`, stores the opaque JSON handle the executor reports through
``on_handle`` in the stage's manifest entry, and records the immutable `StageOutcome` it gets
back. A run that died leaves handles behind; `Executor.reap` ends what they name. See
docs/resilience.md for the local executor's teardown and the reasons behind it.

This module holds the interface only: no process code. `LocalExecutor` lives in ``local.py``,
the decisions of a stage's teardown in ``teardown.py``, and which executor reaps a handle of
which kind in ``reaping.py``.
"""

# No `from __future__ import annotations` (docs/architecture.md, cold start): typing would
# compile each NamedTuple/TypedDict field written as a string into a ForwardRef at import.

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from codex_orchestrator.records.statuses import StageFailure

#: The most of each output stream an outcome carries in memory (the tail).
TAIL_BYTES = 64 * 1024

#: Every stage's environment carries its run id under this name; executors may use it to find
#: what a stage left behind.
RUN_ID_ENV = "CODEX_ORCHESTRATOR_RUN_ID"

#: A JSON-serialisable description of a running stage, meaningful only to its executor. It
#: always has ``kind`` (the executor's name) and ``host`` (where the stage runs). Its field
#: names are defined below, once, for every executor.
Handle = Mapping[str, Any]

# --- a handle's fields -----------------------------------------------------------------------

#: Every handle: the executor that ran the stage (which reaps it, see ``reaping.py``) and the
#: machine the stage runs on.
HANDLE_KIND = "kind"
#: The kind of the local executor's handles (its name).
LOCAL_KIND = "local"
HANDLE_HOST = "host"
#: A stage's shell, which leads its process group, and the leader's start time in clock ticks
#: since boot (tells a reused pid apart). The runner also copies these onto the stage entry.
HANDLE_PID = "pid"
HANDLE_PGID = "pgid"
HANDLE_START_TICKS = "pid_start_ticks"
#: What Dask handles called the start time before one name served every executor: still read.
OLD_DASK_START_TICKS = "start_ticks"
#: Local stages: the run-id entry of the stage's environment (finds processes that left the
#: stage's group, see `RUN_ID_ENV`).
HANDLE_ENV_MARKER = "env_marker"
#: Dask stages: the worker's address and pid, the scheduler, the mark in the environment of
#: every process of the stage, what is known of a lost stage's end (``reported``, ``reaped``,
#: ``due``, ``unknown``) and, when ``due``, by when its supervisor ends it (UTC,
#: ``YYYY-MM-DDTHH:MM:SSZ``).
HANDLE_WORKER = "worker"
HANDLE_WORKER_PID = "worker_pid"
HANDLE_SCHEDULER = "scheduler"
HANDLE_STAGE_MARK = "stage_mark"
HANDLE_REMOTE_END = "remote_end"
HANDLE_REMOTE_ENDS_BY = "remote_ends_by"


def recorded_start_ticks(handle: Handle) -> object:
    """The start time a handle records for its group's leader, under either name (unchecked)."""
    if HANDLE_START_TICKS in handle:
        return handle[HANDLE_START_TICKS]
    return handle.get(OLD_DASK_START_TICKS)


class StageRequest(NamedTuple):
    """One stage to run: the command, where, with which environment, where output goes.

    ``env`` is the whole environment of a local stage (the orchestrator's, then the run's
    variables); ``run_env`` holds only what the run sets (its own variables and the stage's
    configured ``env``), which is what an executor running the stage elsewhere ships.
    """

    stage_id: str
    command: str
    cwd: Path
    env: Mapping[str, str]
    stdout_path: Path
    stderr_path: Path
    timeout_seconds: float | None = None
    resources: Mapping[str, float] | None = None
    run_env: Mapping[str, str] = MappingProxyType({})


class StageOutcome(NamedTuple):
    """How a stage ended, built once by the executor when the stage is over."""

    exit_code: int | None
    started_at: float  # wall clock, for records only
    duration_seconds: float  # monotonic
    timed_out: bool
    cancelled: bool
    killed: bool  # SIGKILL was needed after the grace period
    lost: bool  # the executor lost the stage (e.g. its worker died)
    stdout_tail: bytes
    stderr_tail: bytes
    stdout_bytes: int
    stderr_bytes: int
    host: str
    #: Why a ``lost`` stage was lost, when the executor knows more than "its worker died":
    #: a `StageFailure` value (e.g. ``scheduler-lost``) and one line for its summary.
    lost_failure: StageFailure = StageFailure.WORKER_LOST
    lost_reason: str | None = None
    #: A lost stage whose processes the executor could not verify to be gone: it must not be
    #: started again (a retry) in this run; ``lost_reason`` says what is known.
    may_still_run: bool = False


class Cancellation:
    """A thread-safe "stop now" flag (set on a cancelling signal, see `signals.SignalGuard`, or
    on a ``cancel`` request); only executors act on it.

    `request` does nothing but record the signal and make two wake-up pipes readable: the
    first after one request, the second after two (a second signal means "kill at once").
    Executors wait on `wakeup_fd` beside their own events, so they react within milliseconds
    whatever thread they run in.

    A child run has a `dependent` cancellation: every request to its parent's reaches it too,
    while a request to it alone (``cancel CHILD``) stops the child run and nothing else.
    """

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.signum: int | None = None
        self.count = 0
        self.requested_at: float | None = None  # time.monotonic() of the first request
        self._pipes = (_nonblocking_pipe(), _nonblocking_pipe())
        self._dependents: list[Cancellation] = []
        self._parent: Cancellation | None = None
        self._lock = threading.RLock()

    def dependent(self) -> "Cancellation":
        """A cancellation requested with this one (each request, so escalation too), which
        may also be requested alone; `close` it when done."""
        child = Cancellation(self.grace_seconds)
        child._parent = self
        with self._lock:
            self._dependents.append(child)
            for _ in range(self.count):  # this one may have been requested already
                child.request(self.signum or 0)
        return child

    @property
    def requested(self) -> bool:
        """True once cancellation was requested."""
        return self.signum is not None

    @property
    def escalated(self) -> bool:
        """True after a second request: end stages at once, without a grace period."""
        return self.count >= 2

    def request(self, signum: int) -> None:
        """Ask every executor to end its stages (from any thread)."""
        with self._lock:
            self.count += 1
            if self.signum is None:
                self.requested_at = time.monotonic()
                self.signum = signum
            if self.count <= len(self._pipes):
                with contextlib.suppress(OSError):
                    os.write(self._pipes[self.count - 1][1], b"!")
            for child in list(self._dependents):
                child.request(signum)

    def wakeup_fd(self, *, escalation: bool = False) -> int:
        """A descriptor that becomes readable on the first request (the second with
        ``escalation``) and stays readable; never read from it."""
        return self._pipes[1 if escalation else 0][0]

    def close(self) -> None:
        """Release the wake-up pipes (a dependent also leaves its parent)."""
        if self._parent is not None:
            with self._parent._lock, contextlib.suppress(ValueError):
                self._parent._dependents.remove(self)
        for read_end, write_end in self._pipes:
            for fd in (read_end, write_end):
                with contextlib.suppress(OSError):
                    os.close(fd)


def _nonblocking_pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    return read_end, write_end


class Executor(Protocol):
    """Runs stages. `run` may be called from several threads at once."""

    name: str

    @property
    def options(self) -> Mapping[str, str]:
        """The choices a run records of its executor (manifest ``executor_options``, e.g. the
        Dask scheduler), so that ``resume`` makes the same ones; empty for the local one."""
        ...

    def run(
        self,
        request: StageRequest,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> StageOutcome:
        """Run one stage to its end, honouring its timeout and ``cancellation``.

        ``on_handle`` is called once the stage exists, with the handle the runner stores so that
        a later ``resume`` can `reap` what a dead run left behind (and again when the executor
        learns more, e.g. that a lost stage's processes may still run until a given time). Raises OSError or ValueError
        when the stage cannot be started at all.
        """
        ...

    def reap(self, handle: Handle, grace_seconds: float) -> bool:
        """End what a dead run's stage left behind; True when something was ended.

        Verifies that ``handle`` still names the same thing before signalling anything, and
        ignores handles of another kind or host (fail closed).
        """
        ...

    def close(self) -> None:
        """End whatever the stages left running (helpers end with the run); release resources."""
        ...
