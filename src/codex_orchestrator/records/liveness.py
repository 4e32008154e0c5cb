"""Is a run still alive? Who drives it, its heartbeat age and staleness threshold.

`driver_state` is the one answer to "who drives this run" that every command uses (``status``,
``runs``, ``cancel``, ``resume``, the report): it asks the kernel, never a file alone, and
only a driver it names `DriverState.ALIVE` may be signalled. See docs/resilience.md.
"""

# No `from __future__ import annotations` (docs/architecture.md, cold start): typing would
# compile each NamedTuple/TypedDict field written as a string into a ForwardRef at import.

import os
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.errors import RunActiveError
from codex_orchestrator.records.driver import DriverProcess, run_driver
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.statuses import TERMINAL_RUN_STATUSES, RunStatus
from codex_orchestrator.records.workspace import SETTING_ENV_NAMES, Settings
from codex_orchestrator.util.clock import parse_iso_utc
from codex_orchestrator.util.numeric import number_or_none
from codex_orchestrator.util.procfs import checked_pid, host_name, process_start_ticks
from codex_orchestrator.util.safefs import SMALL_FILE_LIMIT, read_regular

STALE_ENV = SETTING_ENV_NAMES["heartbeat_stale_after_seconds"]


class DriverState(StrEnum):
    """Who drives an unfinished run, as far as this host can prove it."""

    #: A live process here holds the run's driver lock, as the kernel shows: safe to signal.
    ALIVE = "alive"
    #: The lock is held (or, for a run recorded before driver locks, its recorded pid is
    #: running) but no process here can be shown to hold it: never signalled, never settled.
    UNVERIFIED = "unverified"
    #: Driven from another host: nothing here can be signalled or proved.
    ELSEWHERE = "elsewhere"
    #: Nobody drives it: the kernel released the lock when its driver died (or the recorded
    #: driver of an older run is provably gone).
    GONE = "gone"


class DriverStatus(NamedTuple):
    """`driver_state`'s answer: the state, and the verified driver when it is ``ALIVE``."""

    state: DriverState
    process: DriverProcess | None = None
    describe: str = "no process"


def driver_state(run_dir: Path, manifest: Mapping[str, Any]) -> DriverStatus:
    """Who drives the run in ``run_dir`` (see `DriverState`).

    The run's driver lock decides; a run recorded before driver locks existed is judged by its
    recorded pid, start time and host, which can prove its driver dead but never verify a live
    one (a planted manifest could name any process).
    """
    driver = run_driver(run_dir)
    if driver.alive:
        if driver.process is not None:
            return DriverStatus(DriverState.ALIVE, driver.process, driver.describe())
        if driver.host not in (None, host_name()):
            return DriverStatus(DriverState.ELSEWHERE, None, driver.describe())
        return DriverStatus(DriverState.UNVERIFIED, None, driver.describe())
    if os.path.lexists(RunLayout(run_dir).driver_lock):
        return DriverStatus(DriverState.GONE)
    host = manifest.get("host")
    if host not in (None, host_name()):
        return DriverStatus(DriverState.ELSEWHERE, None, f"a process on host {host}")
    pid = checked_pid(manifest.get("orchestrator_pid"))
    if pid is None:
        return DriverStatus(DriverState.GONE)
    ticks = process_start_ticks(pid)
    if ticks is None or ticks != manifest.get("orchestrator_start_ticks"):
        return DriverStatus(DriverState.GONE)
    return DriverStatus(DriverState.UNVERIFIED, None, f"pid {pid} (recorded, unverified)")


class Liveness(NamedTuple):
    """What can be told about an unfinished run from outside."""

    heartbeat_at: str | None
    heartbeat_age_seconds: float | None
    stale_after_seconds: float
    stale: bool
    #: `driver_state`'s answer for an unfinished run (None for a finished one: nobody asked).
    driver: DriverStatus | None

    @property
    def orchestrator_gone(self) -> bool:
        """True when the run is unfinished and nobody drives it any more."""
        return self.driver is not None and self.driver.state is DriverState.GONE

    @property
    def alive(self) -> bool:
        """True when the run looks alive: fresh heartbeat and no proof its orchestrator died."""
        return not self.stale and not self.orchestrator_gone


def stale_threshold(manifest: Mapping[str, Any]) -> float:
    """The env variable's threshold, else the one recorded in the manifest, else the default."""
    for candidate in (os.environ.get(STALE_ENV), manifest.get("heartbeat_stale_after_seconds")):
        value = number_or_none(candidate)
        if value is not None and value > 0:
            return value
    return Settings().heartbeat_stale_after_seconds


def assess(run_dir: Path, manifest: Mapping[str, Any]) -> Liveness:
    """Assess an in-progress run's heartbeat and orchestrator process."""
    stamp, age = heartbeat_age(run_dir, manifest)
    threshold = stale_threshold(manifest)
    unfinished = manifest.get("status") not in TERMINAL_RUN_STATUSES
    stale = unfinished and (age is None or age > threshold)
    driver = driver_state(run_dir, manifest) if unfinished else None
    return Liveness(stamp, age, threshold, stale, driver)


def refuse_if_alive(run_dir: Path, manifest: Mapping[str, Any], fix: str) -> Liveness:
    """Raise `RunActiveError` (exit 2) when the unfinished run still looks alive; ``fix`` says
    what to do instead. Returns the assessment otherwise."""
    liveness = assess(run_dir, manifest)
    status = manifest.get("status")
    if status in (RunStatus.IN_PROGRESS, RunStatus.QUEUED) and liveness.alive:
        driver = liveness.driver.describe if liveness.driver else "no process"
        age = liveness.heartbeat_age_seconds
        beat = f"heartbeat {age:.1f}s ago" if age is not None else "no heartbeat yet"
        raise RunActiveError(
            f"run {manifest.get('run_id')} is still {status} and still alive ({beat}, driven "
            f"by {driver}); {fix}"
        )
    return liveness


def heartbeat_age(run_dir: Path, manifest: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """The last heartbeat (``.heartbeat``, else the manifest's ``heartbeat_at``) and its age."""
    stamp: str | None = None
    try:
        raw = read_regular(RunLayout(run_dir).heartbeat, SMALL_FILE_LIMIT, follow_links=False)
        stamp = raw.decode("utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        stamp = None
    if stamp is None or parse_iso_utc(stamp) is None:
        stamp = manifest.get("heartbeat_at")
    moment = parse_iso_utc(stamp) if isinstance(stamp, str) else None
    return stamp, (round(time.time() - moment, 3) if moment is not None else None)
