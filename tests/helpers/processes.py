"""Test helpers for real processes: wait for a condition, tell a live process from a zombie."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is true and return its value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def marked_processes(entry: str) -> dict[int, int]:
    """``{pid: start ticks}`` of the live processes (this one aside) whose environment holds
    ``entry`` (``NAME=value``) exactly."""
    # Run after every test over every process on the machine, so it reads only what it must:
    # each environment whole, in one unbuffered read, and the status of the few that match.
    wanted = b"\0" + entry.encode() + b"\0"
    found: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (0, 1, os.getpid()):
            continue
        try:
            with open(f"/proc/{name}/environ", "rb", buffering=0) as handle:
                environ = b"\0" + handle.read() + b"\0"
        except OSError:
            continue
        if wanted in environ:
            ticks = _start_ticks(int(name))
            if ticks is not None and alive(int(name)):
                found[int(name)] = ticks
    return found


def end_marked_processes(entry: str, grace: float = 1.0) -> list[int]:
    """SIGKILL, by pid, each live process whose environment holds ``entry``; the pids ended.

    Processes already dying (a group the test just killed) get ``grace`` seconds to go by
    themselves first. Each pid comes from a scan and is signalled only while its start time
    is the one the scan saw (never 0, 1, a negative id or this process). Repeats while new
    ones appear (a dying shell's child may still fork).
    """
    deadline = time.monotonic() + grace
    targets = marked_processes(entry)  # one scan when nothing is left, as after most tests
    while targets and time.monotonic() < deadline:
        time.sleep(0.05)
        targets = marked_processes(entry)
    ended: list[int] = []
    for _ in range(10):
        if not targets:
            break
        for pid, ticks in targets.items():
            if pid > 1 and _start_ticks(pid) == ticks:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    ended.append(pid)
        time.sleep(0.05)
        targets = marked_processes(entry)
    return ended


def signal_recorded_pid(pid: object, sig: int) -> None:
    """``os.kill(pid, sig)`` for a pid a run recorded (a manifest, a lock): refuse, failing
    the test, anything but one other process. ``kill(0)`` is our own group, ``kill(-1)``
    every process on the machine, 1 is init, and a bad record must never become one."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1 or pid == os.getpid():
        raise AssertionError(f"refusing to signal recorded pid {pid!r}")
    os.kill(pid, sig)
