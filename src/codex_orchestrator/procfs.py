"""Facts about processes read from ``/proc`` (Linux), cheap enough for ``status``."""

from __future__ import annotations

import os


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
