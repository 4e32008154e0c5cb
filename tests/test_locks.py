"""FileLock: real flock between real processes, bounded backoff, stale lock files."""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.errors import EXIT_LOCK_TIMEOUT, LockTimeoutError
from codex_orchestrator.records.workspace import Settings
from codex_orchestrator.util.locks import FileLock
from helpers.lock_holder import lock_held_elsewhere

FORK = multiprocessing.get_context("fork")


class CountingLock(FileLock):
    """A FileLock that counts its tries."""

    tries = 0

    def try_acquire(self) -> bool:
        self.tries += 1
        return super().try_acquire()


def test_acquire_creates_parents_records_holder_and_releases(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "task.lock"
    first, second = FileLock(path), FileLock(path, attempts=1)
    with first:
        pid, host, stamp = path.read_text().split()
        assert (int(pid), host) == (os.getpid(), socket.gethostname())
        assert stamp.endswith("Z")
        assert not second.try_acquire()
    assert second.acquire() == pytest.approx(0, abs=0.05)
    second.release()
    assert path.exists(), "the lock file is never deleted"


def test_waits_for_a_holder_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "task.lock"
    with lock_held_elsewhere(path) as release:
        lock = FileLock(path)
        assert not lock.try_acquire()
        threading.Timer(0.25, release.set).start()
        waited = lock.acquire()  # tries at 0, 0.1, 0.3 s: the third one succeeds
    lock.release()
    assert 0.25 <= waited < 1.6


@pytest.mark.slow
def test_gives_up_after_the_bounded_schedule(tmp_path: Path) -> None:
    path = tmp_path / "task.lock"
    lock = CountingLock(path)  # defaults: 5 tries, waits 0.1 + 0.2 + 0.4 + 0.8 s
    with lock_held_elsewhere(path):
        started = time.monotonic()
        with pytest.raises(LockTimeoutError) as raised:
            lock.acquire()
        elapsed = time.monotonic() - started
    assert lock.tries == 5
    assert 1.4 <= elapsed < 3
    message = str(raised.value)
    assert f"could not lock {path} after 5 attempts" in message
    assert "another process holds it — retry later" in message
    assert raised.value.exit_code == EXIT_LOCK_TIMEOUT == 75


def test_max_delay_caps_each_wait(tmp_path: Path) -> None:
    path = tmp_path / "task.lock"
    lock = CountingLock(path, attempts=4, initial_delay=0.05, factor=10, max_delay=0.1)
    with lock_held_elsewhere(path):
        started = time.monotonic()
        with pytest.raises(LockTimeoutError):
            lock.acquire()
        elapsed = time.monotonic() - started
    assert lock.tries == 4
    assert 0.22 <= elapsed < 0.6  # 0.05 + 0.1 + 0.1


def test_lock_file_left_with_garbage_and_old_mtime_never_blocks(tmp_path: Path) -> None:
    path = tmp_path / "task.lock"
    path.write_bytes(b"\x00garbage 99999 elsewhere\xff")
    year_ago = time.time() - 365 * 86400
    os.utime(path, (year_ago, year_ago))
    lock = FileLock(path, attempts=1)
    assert lock.acquire() < 0.05
    lock.release()


def _take_and_sleep(path: Path, held: Any) -> None:
    FileLock(path).acquire()
    held.set()
    time.sleep(60)


def test_lock_of_a_sigkilled_holder_is_free(tmp_path: Path) -> None:
    path = tmp_path / "task.lock"
    held = FORK.Event()
    process = FORK.Process(target=_take_and_sleep, args=(path, held))
    process.start()
    assert held.wait(10)
    assert not FileLock(path).try_acquire()
    process.kill()  # SIGKILL
    process.join(10)
    lock = FileLock(path, attempts=1)
    assert lock.try_acquire()
    lock.release()


def test_from_settings_uses_the_lock_settings(tmp_path: Path) -> None:
    settings = Settings(
        lock_attempts=3, lock_initial_delay_ms=20, lock_backoff_factor=3, lock_max_delay_ms=50
    )
    lock = FileLock.from_settings(tmp_path / "task.lock", settings)
    assert (lock.attempts, lock.initial_delay, lock.factor, lock.max_delay) == (3, 0.02, 3, 0.05)
    with lock_held_elsewhere(lock.path):
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match="after 3 attempts"):
            lock.acquire()
        assert 0.06 <= time.monotonic() - started < 0.5  # 0.02 + 0.05


def test_default_settings_give_the_documented_schedule(tmp_path: Path) -> None:
    lock = FileLock.from_settings(tmp_path / "task.lock", Settings())
    assert (lock.attempts, lock.initial_delay, lock.factor, lock.max_delay) == (5, 0.1, 2, 1.0)
