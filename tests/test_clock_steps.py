"""Timeouts and grace periods follow the monotonic clock: wall-clock steps change nothing."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from codex_orchestrator.executors.base import Cancellation, StageOutcome, StageRequest
from codex_orchestrator.executors.local import LocalExecutor

REAL_TIME = time.time


def _run_with_clock_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, timeout: float, step: float
) -> tuple[StageOutcome, float]:
    """Run ``command`` under the local executor; 0.3 s in, the wall clock jumps by ``step``."""
    request = StageRequest(
        stage_id="stage",
        command=command,
        cwd=tmp_path,
        env=dict(os.environ),
        stdout_path=tmp_path / "out.log",
        stderr_path=tmp_path / "err.log",
        timeout_seconds=timeout,
    )
    executor = LocalExecutor(grace_seconds=1)
    cancellation = Cancellation(grace_seconds=1)

    def jump() -> None:
        monkeypatch.setattr(time, "time", lambda: REAL_TIME() + step)

    timer = threading.Timer(0.3, jump)
    timer.start()
    started = time.monotonic()
    try:
        outcome = executor.run(request, cancellation, lambda handle: None)
    finally:
        timer.cancel()
        executor.close()
        cancellation.close()
    return outcome, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("step", [-3600.0, 3600.0])
def test_timeout_is_enforced_whatever_the_wall_clock_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: float
) -> None:
    outcome, elapsed = _run_with_clock_step(tmp_path, monkeypatch, "sleep 30", 1.0, step)
    assert outcome.timed_out and not outcome.cancelled
    assert 0.9 <= elapsed < 10, elapsed
    assert 0.9 <= outcome.duration_seconds < 10


@pytest.mark.slow
@pytest.mark.parametrize("step", [-3600.0, 3600.0])
def test_a_stage_within_its_timeout_is_never_killed_by_a_clock_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: float
) -> None:
    outcome, elapsed = _run_with_clock_step(tmp_path, monkeypatch, "sleep 1; echo ok", 5.0, step)
    assert not outcome.timed_out and outcome.exit_code == 0
    assert outcome.stdout_tail == b"ok\n"
    assert outcome.duration_seconds < 5 and elapsed < 5
