"""Exclusive inter-process file locks with bounded, jittered exponential backoff.

`FileLock` uses ``fcntl.flock`` on a lock file. The kernel releases the lock when its holder's
file descriptor closes, including when the holder dies, so a lock file left behind by a dead
process (whatever it contains, however old) never blocks anyone. The file is never deleted:
deleting a lock file that others may have open would let two processes "hold" the lock at once.
A link in place of the lock file is refused (``ELOOP``), never followed: the holder note is
written into the file, which would otherwise overwrite the link's target.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Protocol

from codex_orchestrator.errors import LockTimeoutError
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.procfs import host_name
from codex_orchestrator.util.safefs import open_no_follow, real_directory

#: The default retry schedule (the ``lock_*`` settings of `workspace.Settings` default to it):
#: 5 tries, waits of 0.1 s doubling to at most 1 s.
DEFAULT_ATTEMPTS = 5
DEFAULT_INITIAL_DELAY_MS = 100.0
DEFAULT_BACKOFF_FACTOR = 2.0
DEFAULT_MAX_DELAY_MS = 1000.0
JITTER = 0.1  # each wait varies by up to ±5% of its nominal length, to avoid lockstep


class LockSettings(Protocol):
    """The ``lock_*`` fields of `workspace.Settings` (a lower layer cannot import it)."""

    @property
    def lock_attempts(self) -> int: ...
    @property
    def lock_initial_delay_ms(self) -> float: ...
    @property
    def lock_backoff_factor(self) -> float: ...
    @property
    def lock_max_delay_ms(self) -> float: ...


class FileLock:
    """Exclusive inter-process lock on a lock file using ``fcntl.flock``.

    Released by the kernel when the holder dies, so a lock file left behind by a dead process
    (whatever it contains, however old) never blocks anyone. Never delete the lock file while
    others may use it. Not re-entrant: one holder per instance.
    """

    def __init__(
        self,
        path: Path,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        initial_delay: float = DEFAULT_INITIAL_DELAY_MS / 1000,
        factor: float = DEFAULT_BACKOFF_FACTOR,
        max_delay: float = DEFAULT_MAX_DELAY_MS / 1000,
        make_parent: bool = True,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.path = Path(path)
        self.attempts = attempts
        self.initial_delay = initial_delay
        self.factor = factor
        self.max_delay = max_delay
        self.make_parent = make_parent
        self._fd: int | None = None

    @classmethod
    def from_settings(cls, path: Path, settings: LockSettings) -> FileLock:
        """A lock whose retry schedule comes from the ``lock_*`` settings."""
        return cls(
            path,
            attempts=settings.lock_attempts,
            initial_delay=settings.lock_initial_delay_ms / 1000,
            factor=settings.lock_backoff_factor,
            max_delay=settings.lock_max_delay_ms / 1000,
        )

    def acquire(self) -> float:
        """Take the lock within the retry bound; return the seconds spent waiting.

        Raises `LockTimeoutError` once every attempt has failed.
        """
        started = time.monotonic()
        for attempt in range(self.attempts):
            if self.try_acquire():
                return time.monotonic() - started
            if attempt + 1 < self.attempts:
                time.sleep(self._delay(attempt))
        waited = time.monotonic() - started
        raise LockTimeoutError(
            f"could not lock {self.path} after {self.attempts} attempts ({waited:.1f}s); "
            "another process holds it — retry later"
        )

    def try_acquire(self) -> bool:
        """Make one non-blocking attempt; True when the lock is now held."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this FileLock")
        if self.make_parent:
            real_directory(self.path.parent)
        fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _write_holder(fd)
        return True

    def release(self) -> None:
        """Release the lock (a no-op when it is not held)."""
        fd, self._fd = self._fd, None
        unlock_and_close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _delay(self, attempt: int) -> float:
        nominal = self.initial_delay * self.factor**attempt
        return min(nominal * (1 + JITTER * (_unit_random() - 0.5)), self.max_delay)


def unlock_and_close(fd: int | None) -> None:
    """Drop the ``flock`` held on ``fd`` and close it (nothing when ``fd`` is None)."""
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _write_holder(fd: int) -> None:
    """Record "pid host time" in the lock file, for diagnosis only (never read back)."""
    note = f"{os.getpid()} {host_name()} {iso_utc()}\n".encode()
    try:
        os.pwrite(fd, note, 0)
        if os.fstat(fd).st_size > len(note):
            os.ftruncate(fd, len(note))
    except OSError:
        pass


def _unit_random() -> float:
    """A random number in [0, 1) for jitter (without importing ``random`` at start-up)."""
    return int.from_bytes(os.urandom(4), "big") / 2**32
