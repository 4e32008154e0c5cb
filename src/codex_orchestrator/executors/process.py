"""Process mechanics: spawn in a new session, watch for exit, signal and end process groups.

Nothing here knows what a stage means; `local.py` builds on these pieces, and `teardown.py`
decides when a group is signalled. Every pid
that came from a file goes through `checked_pid` and a start-time comparison before it is
signalled (see docs/resilience.md).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path

from codex_orchestrator.executors.teardown import Teardown
from codex_orchestrator.records.statuses import signal_exit_code
from codex_orchestrator.util.procfs import (
    checked_pid,
    children_of,
    live_group_members,
    process_start_ticks,
    process_state,
    processes_with_env,
)


def spawn_in_new_session(
    command: str, cwd: Path, env: Mapping[str, str], stdout: int, stderr: int
) -> subprocess.Popen[bytes]:
    """Start ``/bin/sh -c command`` as the leader of a new session and process group."""
    return subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


class ExitWatcher:
    """Waits for a child's exit or a wake-up descriptor, via a pidfd where the kernel has one."""

    FALLBACK_SLICE_SECONDS = 0.05

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pidfd = -1

    def __enter__(self) -> ExitWatcher:
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self.pidfd = -1
        return self

    def __exit__(self, *_: object) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def wait(self, seconds: float | None, wake_fd: int | None = None) -> bool:
        """True once the child has exited (and is reaped); False after ``seconds`` or when
        ``wake_fd`` is readable."""
        if self.pidfd < 0:
            return self._wait_without_pidfd(seconds, wake_fd)
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        if wake_fd is not None:
            poller.register(wake_fd, select.POLLIN)
        timeout_ms = None if seconds is None else max(0, int(seconds * 1000 + 0.999))
        events = poller.poll(timeout_ms)
        if any(fd == self.pidfd for fd, _ in events):
            self.proc.wait()
            return True
        return False

    def _wait_without_pidfd(self, seconds: float | None, wake_fd: int | None) -> bool:
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            step = self.FALLBACK_SLICE_SECONDS
            if deadline is not None:
                step = min(step, max(0.0, deadline - time.monotonic()))
            try:
                self.proc.wait(timeout=step)
                return True
            except subprocess.TimeoutExpired:
                pass
            if wake_fd is not None and select.select([wake_fd], [], [], 0)[0]:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False


def exit_code(returncode: int) -> int:
    """Shell convention: a process killed by signal N reports 128+N."""
    return signal_exit_code(-returncode) if returncode < 0 else returncode


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group no longer exists.

    Refuses (False) any id `checked_pid` rejects, so a bad value can never address the
    caller's group or every process.
    """
    if checked_pid(pgid) is None:
        return False
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` exists, zombies aside."""
    if not signal_group(pgid, 0):
        return False
    members = live_group_members(pgid)
    return True if members is None else bool(members)


def end_groups(pgids: Iterable[int], grace_seconds: float, hurry_fd: int | None = None) -> bool:
    """End several process groups at once, as a `Teardown` of what a stage left: SIGTERM to
    all, one shared grace, then SIGKILL.

    The grace is cut short once ``hurry_fd`` is readable (a second signal to the orchestrator).
    Returns True when any group had to be killed with SIGKILL.
    """
    began = time.monotonic()
    teardown = Teardown(grace_seconds, began, None, end_leftovers=True)
    remaining = list(pgids)
    hurried = False
    while True:
        now = time.monotonic()
        decision = teardown.decide(now, began, hurried, True, partial(bool, remaining))
        if decision.signal:
            remaining = [pgid for pgid in remaining if signal_group(pgid, decision.signal)]
        if decision.done or decision.wake_at is None:
            return teardown.killed
        watched = None if hurried else hurry_fd
        remaining = wait_until_gone(remaining, max(0.0, decision.wake_at - now), watched)
        # The hurry descriptor is read only while a group is left: `close` may be handed that
        # of a child run's cancellation, closed once the child run ended.
        if not remaining:
            return teardown.killed
        hurried = hurried or (watched is not None and bool(select.select([watched], [], [], 0)[0]))


def wait_until_gone(pgids: list[int], seconds: float, hurry_fd: int | None) -> list[int]:
    """Poll (with backoff) until every group is gone, ``seconds`` pass or ``hurry_fd`` is
    readable; return the groups still alive."""
    deadline = time.monotonic() + seconds
    delay = 0.005
    while True:
        pgids = [pgid for pgid in pgids if group_alive(pgid)]
        if not pgids or time.monotonic() >= deadline:
            return pgids
        pause = min(delay, max(0.0, deadline - time.monotonic()))
        if hurry_fd is None:
            time.sleep(pause)
        elif select.select([hurry_fd], [], [], pause)[0]:
            return [pgid for pgid in pgids if group_alive(pgid)]
        delay = min(delay * 2, 0.1)


def leftover_group_problem(pgid: object, leader_start_ticks: object) -> str | None:
    """Why a recorded process group must not be signalled, or None when it is verified ours.

    The leader, when alive, must have the recorded start time. A live group whose leader is
    gone is still ours when every member started no earlier than our leader did: Linux does
    not reuse a pid while a process group of that id exists, and a stranger's group under a
    reused id would have a live leader with another start time.
    """
    pid = checked_pid(pgid)
    if pid is None:
        return f"{pgid!r} is not a valid process group id"
    if isinstance(leader_start_ticks, bool) or not isinstance(leader_start_ticks, int):
        return f"its start time {leader_start_ticks!r} is not a recorded tick count"
    if not signal_group(pid, 0):
        return None  # no such group: nothing to signal, nothing to verify
    current = process_start_ticks(pid)
    if current is not None and current != leader_start_ticks:
        return f"process {pid} now is another process (start time differs)"
    if current is None:
        members = live_group_members(pid) or []
        starts = [process_start_ticks(member) for member in members]
        if any(start is None or start < leader_start_ticks for start in starts):
            return f"group {pid} holds processes older than the recorded stage"
    return None


_PR_SET_CHILD_SUBREAPER = 36
#: How often the ending of orphans and of marked processes looks again.
POLL_SECONDS = 0.01


def become_child_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False elsewhere.

    A stage's process that leaves its group and session (``setsid``, a double-forking daemon)
    is then re-parented to the orchestrator instead of init, so `end_adopted_orphans` finds it.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def end_adopted_orphans(
    keep: Iterable[int], grace_seconds: float, hurry_fd: int | None = None
) -> int:
    """End every process re-parented to this one (children in ``keep`` aside), as a
    `Teardown` of leftovers; reap them. Returns how many orphans were found.

    An orphan is signalled through its process group when it leads one (its own helpers die
    with it), else by pid; it is our child, so its pid cannot have been reused. Killing an
    orphan may orphan its own children in turn: each orphan gets SIGTERM when it is first seen
    and SIGKILL with the others once the grace is spent (or ``hurry_fd`` is readable).
    """
    kept = set(keep)
    ours = os.getpgrp()
    found: set[int] = set()
    began = time.monotonic()
    teardown = Teardown(grace_seconds, began, None, end_leftovers=True)
    hurried = False
    while True:
        orphans = _reap_zombie_children(kept)
        decision = teardown.decide(time.monotonic(), began, hurried, True, partial(bool, orphans))
        if decision.done:
            return len(found)
        for pid in orphans:
            sig = decision.signal or (0 if pid in found else signal.SIGTERM)
            if sig:
                _signal_orphan(pid, ours, sig)
            found.add(pid)
        if hurry_fd is not None and not hurried:
            hurried = bool(select.select([hurry_fd], [], [], POLL_SECONDS)[0])
        else:
            time.sleep(POLL_SECONDS)


def _reap_zombie_children(kept: set[int]) -> list[int]:
    """Reap this process's zombie children (outside ``kept``); return its live ones."""
    live = []
    for pid, zombie in children_of(os.getpid()):
        if pid in kept:
            continue
        if zombie:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        else:
            live.append(pid)
    return live


def _signal_orphan(pid: int, own_group: int, sig: int) -> None:
    try:
        group = os.getpgid(pid)
        if group == pid and group != own_group:
            os.killpg(group, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def end_marked_processes(entry: bytes, started_since: int, grace_seconds: float) -> int:
    """End live processes whose environment holds ``entry`` and that started no earlier than
    ``started_since`` (a dead run's escaped stage processes), as a `Teardown` of leftovers;
    return how many were found.

    Each is signalled by pid and only while its start time is still the one seen in the scan.
    """
    me = os.getpid()
    targets = {
        pid: ticks
        for pid in processes_with_env(entry, started_since)
        if pid != me and (ticks := process_start_ticks(pid)) is not None
    }
    found = len(targets)
    began = time.monotonic()
    teardown = Teardown(grace_seconds, began, None, end_leftovers=True)
    while True:
        targets = {pid: ticks for pid, ticks in targets.items() if _alive(pid, ticks)}
        decision = teardown.decide(time.monotonic(), began, False, True, partial(bool, targets))
        if decision.done:
            return found
        for pid, ticks in list(targets.items()) if decision.signal else ():
            if process_start_ticks(pid) != ticks or checked_pid(pid) is None:
                del targets[pid]
                continue
            try:
                os.kill(pid, decision.signal)
            except (ProcessLookupError, PermissionError):
                del targets[pid]
        time.sleep(POLL_SECONDS)


def _alive(pid: int, ticks: int) -> bool:
    state = process_state(pid)
    return state is not None and state != "Z" and process_start_ticks(pid) == ticks
