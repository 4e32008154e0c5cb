"""Facts about processes read from ``/proc`` (Linux), cheap enough for ``status``."""

from __future__ import annotations

import os

#: Linux never hands out a pid above this (``PID_MAX_LIMIT``).
PID_MAX = 1 << 22


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, to tell pid reuse apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


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
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
            state, _parent, group = stat[stat.rindex(b")") + 2 :].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != b"Z":
            members.append(int(name))
    return members


def checked_pid(value: object) -> int | None:
    """``value`` as a pid that is safe to signal, else None.

    Only an integer from 2 to `PID_MAX` qualifies: 0 and negative numbers address process
    groups (``kill(0)`` is the caller's own group, ``kill(-1)`` every process), 1 is init, and
    ``true`` is an int in Python but never a pid.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 < value <= PID_MAX:
        return None
    return value
