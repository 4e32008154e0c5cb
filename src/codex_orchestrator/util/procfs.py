"""Facts about processes read from ``/proc`` (Linux), cheap enough for ``status``."""

from __future__ import annotations

import contextlib
import os

#: Linux never hands out a pid above this (``PID_MAX_LIMIT``).
PID_MAX = 1 << 22


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, to tell pid reuse apart."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (ValueError, IndexError):
        return None


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``R``, ``S``, ``Z``...), or None when it is gone."""
    fields = _stat_fields(pid)
    return fields[0].decode("ascii", "replace") if fields else None


def host_name() -> str:
    """This machine's host name, as recorded in manifests."""
    return os.uname().nodename


def live_group_members(pgid: int) -> list[int] | None:
    """Pids of the group's processes that are not zombies; None when ``/proc`` cannot tell.

    A zombie cannot run and is gone once its parent reaps it, so teardown need not wait for it.
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    members = []
    for name in names:
        if not name.isdigit():
            continue
        fields = _stat_fields(name)
        if fields is None or len(fields) < 3:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(name))
    return members


def lock_token(device: int, inode: int) -> bytes:
    """How ``/proc/locks`` and ``/proc/<pid>/fdinfo`` name a file: ``MAJOR:MINOR:INODE``."""
    return f"{os.major(device):02x}:{os.minor(device):02x}:{inode}".encode()


def exclusive_flock_pids(token: bytes) -> list[int]:
    """Pids ``/proc/locks`` names for the exclusive ``flock`` held on the file ``token`` names.

    Only a hint: the kernel records the pid that took the lock, which may have handed the open
    file to a child and exited since (``start --detach``); `holds_exclusive_flock` is the proof.
    """
    try:
        with open("/proc/locks", "rb") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = _flock_fields(line.split())
        if fields is not None and fields[1] == token:
            with contextlib.suppress(ValueError):
                pids.append(int(fields[0]))
    return pids


def holds_exclusive_flock(pid: int, token: bytes) -> bool:
    """True when process ``pid`` has a descriptor of the very open file that holds the
    exclusive ``flock`` on the file ``token`` names.

    The kernel lists in ``/proc/<pid>/fdinfo/<fd>`` the locks owned by that descriptor's open
    file, so no file anyone can write (a pid written in a lock file) can fake this. False when
    ``/proc`` cannot tell (another user's process, a pid that is gone).
    """
    base = f"/proc/{pid}/fdinfo"
    try:
        names = os.listdir(base)
    except OSError:
        return False
    for name in names:
        try:
            with open(f"{base}/{name}", "rb") as handle:
                info = handle.read(1 << 16)
        except OSError:
            continue
        for line in info.splitlines():
            if line.startswith(b"lock:"):
                fields = _flock_fields(line.split()[1:])
                if fields is not None and fields[1] == token:
                    return True
    return False


def _flock_fields(fields: list[bytes]) -> tuple[bytes, bytes] | None:
    """(pid, file token) of a granted exclusive ``flock`` line (``1: FLOCK ADVISORY WRITE
    <pid> <maj:min:ino> 0 EOF``); None for any other lock and for a waiter (``->``)."""
    if len(fields) < 6 or fields[1] != b"FLOCK" or fields[3] != b"WRITE":
        return None
    return fields[4], fields[5]


def checked_pid(value: object) -> int | None:
    """``value`` as a pid that is safe to signal, else None.

    Only an integer from 2 to `PID_MAX` qualifies: 0 and negative numbers address process
    groups (``kill(0)`` is the caller's own group, ``kill(-1)`` every process), 1 is init, and
    ``true`` is an int in Python but never a pid.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 < value <= PID_MAX:
        return None
    return value


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return stat[stat.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return None


def children_of(parent: int) -> list[tuple[int, bool]]:
    """``(pid, is_zombie)`` for every child of ``parent`` (those re-parented to it included)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    found = []
    wanted = str(parent).encode()
    for name in names:
        if not name.isdigit():
            continue
        fields = _stat_fields(name)
        if fields is not None and len(fields) > 1 and fields[1] == wanted:
            found.append((int(name), fields[0] == b"Z"))
    return found


def processes_with_env(entry: bytes, started_since: int) -> list[int]:
    """Live processes whose environment holds ``entry`` (``NAME=value``) exactly and that
    started at or after clock tick ``started_since``."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    found = []
    for name in names:
        if not name.isdigit():
            continue
        start = process_start_ticks(int(name))
        if start is None or start < started_since:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read(1 << 20)
        except OSError:
            continue
        if entry in environ.split(b"\0"):
            found.append(int(name))
    return found
