"""One driver per run, enforced by the kernel: an exclusive ``flock`` on ``<run>/.driver.lock``.

The process that drives a run (``start``, ``resume``; a child run's too) holds the lock for the
run's whole life; the kernel releases it when that process dies, however it dies. A paused
driver (SIGSTOP) still holds it, so no heartbeat age can let a second driver in. The holder
writes ``{"pid", "start_ticks", "host", "since"}`` into the file for diagnosis only: anyone who
can write the file can write any pid into it. Which process drives a run is asked of the
kernel (`run_driver`): only a live process whose open files hold the lock is the driver, and
only such a process is ever signalled (`signal_driver`). See docs/resilience.md.
"""

# No `from __future__ import annotations` (docs/architecture.md, cold start): typing would
# compile each NamedTuple/TypedDict field written as a string into a ForwardRef at import.

import errno
import fcntl
import json
import os
import signal
import time
from pathlib import Path
from typing import NamedTuple, TypedDict

from codex_orchestrator.errors import RunActiveError
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.locks import unlock_and_close
from codex_orchestrator.util.procfs import (
    checked_pid,
    exclusive_flock_pids,
    holds_exclusive_flock,
    host_name,
    lock_token,
    process_start_ticks,
    process_state,
)
from codex_orchestrator.util.safefs import open_no_follow

#: How long a would-be driver retries: `run_driver` probes hold the lock for microseconds.
ACQUIRE_PATIENCE_SECONDS = 0.25
_HOLDER_LIMIT = 4096


class DriverProcess(NamedTuple):
    """A live process of this host that the kernel shows holding a run's driver lock."""

    pid: int
    start_ticks: int
    lock: bytes  # the lock file as the kernel names it (`procfs.lock_token`)


class RunDriver(NamedTuple):
    """Who drives a run: ``alive`` is True while some process holds the run's driver lock.

    ``process`` is the holder verified through the kernel (None when no process of this host
    can be shown to hold it: another user's, another host's); ``claimed_pid`` and ``host`` are
    what the lock file says, for messages only.
    """

    alive: bool
    process: DriverProcess | None = None
    claimed_pid: int | None = None
    host: str | None = None

    def describe(self) -> str:
        """``pid 123`` (or what the lock file claims, said to be unverified)."""
        if self.process is not None:
            return f"pid {self.process.pid}"
        if self.claimed_pid is None:
            return "an unidentified process"
        where = f" on host {self.host}" if self.host else ""
        return f"a process its lock file names as pid {self.claimed_pid}{where} (unverified)"


def run_driver(run_dir: Path) -> RunDriver:
    """Is the run in ``run_dir`` driven by a live process, and which one?

    Never blocks and never takes the lock for longer than one non-blocking probe. A run with no
    lock file has no driver (runs recorded before driver locks existed included).
    """
    try:
        fd = open_no_follow(RunLayout(run_dir).driver_lock, os.O_RDONLY)
    except OSError:
        return RunDriver(alive=False)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        except OSError:
            return RunDriver(alive=False)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return RunDriver(alive=False)
    finally:
        os.close(fd)


def _holder(fd: int) -> RunDriver:
    """The lock is held: find the holder among the pid the file names and the pids the kernel
    recorded for the lock, and keep the one the kernel shows holding it."""
    try:
        record = json.loads(os.pread(fd, _HOLDER_LIMIT, 0).decode("utf-8"))
    except (OSError, ValueError):
        record = None
    record = record if isinstance(record, dict) else {}
    claimed = checked_pid(record.get("pid"))
    host = record.get("host") if isinstance(record.get("host"), str) else None
    info = os.fstat(fd)
    lock = lock_token(info.st_dev, info.st_ino)
    candidates = [claimed] if claimed is not None else []
    for pid in [*candidates, *exclusive_flock_pids(lock)]:
        process = verified_driver(pid, lock)
        if process is not None:
            return RunDriver(alive=True, process=process, claimed_pid=claimed, host=host)
    return RunDriver(alive=True, claimed_pid=claimed, host=host)


def verified_driver(pid: int, lock: bytes) -> DriverProcess | None:
    """``pid`` as a `DriverProcess` when it is a live process (not this one, not a zombie)
    holding the lock ``lock`` names, with its start time; None otherwise."""
    if checked_pid(pid) is None or pid == os.getpid() or process_state(pid) in (None, "Z"):
        return None
    ticks = process_start_ticks(pid)
    if ticks is None or not holds_exclusive_flock(pid, lock):
        return None
    # the same process throughout: its pid was not reused while its files were read
    return DriverProcess(pid, ticks, lock) if process_start_ticks(pid) == ticks else None


def signal_driver(process: DriverProcess, signum: int) -> bool:
    """Send ``signum`` to a verified driver, checked once more through a pidfd opened first, so
    that the pid cannot be reused between the check and the signal; False when it is gone or no
    longer holds the lock."""
    try:
        fd = os.pidfd_open(process.pid)
    except OSError:
        return False
    try:
        if verified_driver(process.pid, process.lock) != process:
            return False
        signal.pidfd_send_signal(fd, signum)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class DriverIdentity(TypedDict):
    """The manifest fields naming a run's driver process."""

    host: str
    orchestrator_pid: int
    orchestrator_start_ticks: int | None


def driver_identity() -> DriverIdentity:
    """The manifest fields that name this process as a run's driver (for older readers and
    for runs on hosts where the lock cannot be probed)."""
    pid = os.getpid()
    return {
        "host": host_name(),
        "orchestrator_pid": pid,
        "orchestrator_start_ticks": process_start_ticks(pid),
    }


class DriverLock:
    """This process's hold on a run: taken by `acquire`, released by `release` or by death."""

    def __init__(self, run_dir: Path) -> None:
        self.path = RunLayout(run_dir).driver_lock
        self._fd: int | None = None

    @classmethod
    def take(cls, run_dir: Path, run_id: str) -> "DriverLock":
        """Become the run's driver, or raise `RunActiveError` naming the live holder."""
        lock = cls(run_dir)
        if not lock.acquire():
            holder = run_driver(run_dir)
            raise RunActiveError(
                f"run {run_id} is still alive: driven by {holder.describe()}, which holds "
                f"{lock.path.name} (--force does not override a live driver); wait for it to "
                "end, or cancel it first"
            )
        return lock

    def acquire(self) -> bool:
        """Take the lock, retrying briefly past concurrent probes; False while another holds it.

        Raises OSError when the lock file cannot be created (read-only or full run directory).
        """
        try:
            fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as error:
            if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            # a run directory that cannot be written: a read-only descriptor still locks
            fd = open_no_follow(self.path, os.O_RDONLY)
        deadline = time.monotonic() + ACQUIRE_PATIENCE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.01)
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        self._write_holder(fd)
        return True

    @staticmethod
    def _write_holder(fd: int) -> None:
        pid = os.getpid()
        record = {
            "pid": pid,
            "start_ticks": process_start_ticks(pid),
            "host": host_name(),
            "since": iso_utc(),
        }
        data = (json.dumps(record) + "\n").encode("utf-8")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass  # diagnosis only: the lock itself is what counts

    def claim(self) -> None:
        """Record this process as the holder (a forked child that inherited the lock)."""
        if self._fd is not None:
            self._write_holder(self._fd)

    def hand_over(self) -> None:
        """Close this process's descriptor without unlocking: a forked child that shares the
        lock keeps it (``flock`` belongs to the open file, which the child still has open)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def release(self) -> None:
        """Give the run up (a no-op when not held)."""
        fd, self._fd = self._fd, None
        unlock_and_close(fd)
