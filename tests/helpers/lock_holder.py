"""Test helper: hold a file lock from another (real) process."""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codex_orchestrator.util.locks import FileLock

FORK = multiprocessing.get_context("fork")


def _hold(path: Path, held: Any, release: Any) -> None:
    with FileLock(path):
        held.set()
        release.wait(30)


@contextmanager
def lock_held_elsewhere(path: Path) -> Iterator[Any]:
    """Hold ``path`` locked from another process until the block ends."""
    held, release = FORK.Event(), FORK.Event()
    process = FORK.Process(target=_hold, args=(path, held, release))
    process.start()
    assert held.wait(10), "the holder process never took the lock"
    try:
        yield release
    finally:
        release.set()
        process.join(10)


@contextmanager
def lock_held_by_no_process(path: Path, holder_record: dict[str, Any]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` that no process has open: the locked descriptor
    travels in a Unix-socket message nobody has received yet, as a lock held from another
    host (or a process /proc cannot show) looks from here. ``holder_record`` is written into
    the file, as a driver (or a forger) would write it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    sender, receiver = socket.socketpair(socket.AF_UNIX)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_record).encode(), 0)
        socket.send_fds(sender, [b"x"], [fd])
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        sender.close()
        receiver.close()  # the message and the descriptor in it go: the lock is released
