"""Is a run still alive? Heartbeat age, staleness threshold, and the orchestrator's pid."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.clock import parse_iso_utc
from codex_orchestrator.driver import DRIVER_LOCK_NAME, run_driver
from codex_orchestrator.errors import RunActiveError
from codex_orchestrator.manifest import HEARTBEAT_NAME
from codex_orchestrator.numeric import number_or_none
from codex_orchestrator.procfs import checked_pid, host_name, process_start_ticks
from codex_orchestrator.safefs import SMALL_FILE_LIMIT, read_regular
from codex_orchestrator.statuses import TERMINAL_RUN_STATUSES, RunStatus
from codex_orchestrator.workspace import Settings

STALE_ENV = "CODEX_ORCHESTRATOR_HEARTBEAT_STALE_AFTER_SECONDS"


class Liveness(NamedTuple):
    """What can be told about an unfinished run from outside."""

    heartbeat_at: str | None
    heartbeat_age_seconds: float | None
    stale_after_seconds: float
    stale: bool
    orchestrator_gone: bool

    @property
    def alive(self) -> bool:
        """True when the run looks alive: fresh heartbeat and no proof its orchestrator died."""
        return not self.stale and not self.orchestrator_gone


def stale_threshold(manifest: dict[str, Any]) -> float:
    """The env variable's threshold, else the one recorded in the manifest, else the default."""
    for candidate in (os.environ.get(STALE_ENV), manifest.get("heartbeat_stale_after_seconds")):
        value = number_or_none(candidate)
        if value is not None and value > 0:
            return value
    return Settings().heartbeat_stale_after_seconds


def assess(run_dir: Path, manifest: dict[str, Any]) -> Liveness:
    """Assess an in-progress run's heartbeat and orchestrator process."""
    stamp, age = heartbeat_age(run_dir, manifest)
    threshold = stale_threshold(manifest)
    unfinished = manifest.get("status") not in TERMINAL_RUN_STATUSES
    stale = unfinished and (age is None or age > threshold)
    return Liveness(
        stamp, age, threshold, stale, unfinished and _orchestrator_gone(run_dir, manifest)
    )


def refuse_if_alive(run_dir: Path, manifest: dict[str, Any], fix: str) -> Liveness:
    """Raise `RunActiveError` (exit 2) when the unfinished run still looks alive; ``fix`` says
    what to do instead. Returns the assessment otherwise."""
    liveness = assess(run_dir, manifest)
    status = manifest.get("status")
    if status in (RunStatus.IN_PROGRESS, RunStatus.QUEUED) and liveness.alive:
        age = liveness.heartbeat_age_seconds
        beat = f"heartbeat {age:.1f}s ago" if age is not None else "no heartbeat yet"
        raise RunActiveError(
            f"run {manifest.get('run_id')} is still {status} and still alive ({beat}, pid "
            f"{manifest.get('orchestrator_pid')}); {fix}"
        )
    return liveness


def _orchestrator_gone(run_dir: Path, manifest: dict[str, Any]) -> bool:
    """True only when the run's driver is provably dead.

    The driver lock is the proof: the kernel released it when its holder died. A run recorded
    before driver locks existed falls back to its recorded pid and start time (same host only).
    """
    if run_driver(run_dir).alive:
        return False
    if (run_dir / DRIVER_LOCK_NAME).exists():
        return True
    pid = checked_pid(manifest.get("orchestrator_pid"))
    if pid is None or manifest.get("host") != host_name():
        return False
    ticks = process_start_ticks(pid)
    return ticks is None or ticks != manifest.get("orchestrator_start_ticks")


def heartbeat_age(run_dir: Path, manifest: dict[str, Any]) -> tuple[str | None, float | None]:
    """The last heartbeat (``.heartbeat``, else the manifest's ``heartbeat_at``) and its age."""
    stamp: str | None = None
    try:
        raw = read_regular(run_dir / HEARTBEAT_NAME, SMALL_FILE_LIMIT, follow_links=False)
        stamp = raw.decode("utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        stamp = None
    if stamp is None or parse_iso_utc(stamp) is None:
        stamp = manifest.get("heartbeat_at")
    moment = parse_iso_utc(stamp) if isinstance(stamp, str) else None
    return stamp, (round(time.time() - moment, 3) if moment is not None else None)
