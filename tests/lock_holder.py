"""Test helper: hold a file lock from another (real) process."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codex_orchestrator.locks import FileLock

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
