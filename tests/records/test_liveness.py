"""`driver_state` is the one answer to "who drives this run": `assess` (status, runs, logs,
report) and `refuse_if_alive` (resume, review) carry it, and never name a pid it did not
verify."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.errors import RunActiveError
from codex_orchestrator.records.liveness import DriverState, assess, refuse_if_alive
from codex_orchestrator.records.manifest import HEARTBEAT_NAME
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.procfs import host_name, process_start_ticks


def _run(tmp_path: Path, status: str, pid: int) -> dict[str, Any]:
    """A run directory without a driver lock (a run recorded before driver locks existed)
    whose manifest names ``pid`` as its driver, with a fresh heartbeat."""
    (tmp_path / HEARTBEAT_NAME).write_text(iso_utc())
    return {
        "run_id": "r1",
        "status": status,
        "host": host_name(),
        "orchestrator_pid": pid,
        "orchestrator_start_ticks": process_start_ticks(pid),
    }


def test_a_recorded_pid_that_runs_is_unverified_and_never_named_as_the_driver(
    tmp_path: Path,
) -> None:
    manifest = _run(tmp_path, "in_progress", os.getpid())  # any live process could be named
    liveness = assess(tmp_path, manifest)
    assert liveness.driver is not None and liveness.driver.state is DriverState.UNVERIFIED
    assert liveness.driver.process is None and not liveness.orchestrator_gone
    with pytest.raises(RunActiveError, match=r"driven by pid \d+ \(recorded, unverified\)"):
        refuse_if_alive(tmp_path, manifest, "wait for it")


def test_a_dead_recorded_driver_is_gone_and_a_finished_run_is_not_asked(tmp_path: Path) -> None:
    manifest = _run(tmp_path, "in_progress", os.getpid())
    manifest["orchestrator_start_ticks"] = -1  # the pid now belongs to another process
    gone = assess(tmp_path, manifest)
    assert gone.driver is not None and gone.driver.state is DriverState.GONE
    assert gone.orchestrator_gone and not gone.alive
    assert refuse_if_alive(tmp_path, manifest, "wait for it").orchestrator_gone
    finished = assess(tmp_path, {**manifest, "status": "succeeded"})
    assert finished.driver is None and not finished.orchestrator_gone
