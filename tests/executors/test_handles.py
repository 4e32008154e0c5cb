"""Stage handles: one field name for the leader's start time (the old Dask one still read),
and one registry that sends each handle to the executor of its kind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from codex_orchestrator.executors.base import (
    HANDLE_START_TICKS,
    OLD_DASK_START_TICKS,
    Handle,
    recorded_start_ticks,
)
from codex_orchestrator.executors.reaping import Reapers
from codex_orchestrator.util.procfs import host_name, process_start_ticks


class RemoteStandIn:
    """An executor of another kind: records what it is asked to reap."""

    name = "remote"

    def __init__(self) -> None:
        self.reaped: list[Handle] = []

    def reap(self, handle: Handle, grace_seconds: float) -> bool:
        self.reaped.append(handle)
        return True


@pytest.fixture
def leftover() -> Iterator[subprocess.Popen[bytes]]:
    """A stage's group a dead run left behind: ``sleep`` leading its own session."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _local_handle(pid: int, ticks_field: str) -> dict[str, Any]:
    ticks = process_start_ticks(pid)
    return {"kind": "local", "host": host_name(), "pid": pid, "pgid": pid, ticks_field: ticks}


def test_the_start_time_is_read_under_the_new_name_first_then_the_old_one() -> None:
    assert recorded_start_ticks({HANDLE_START_TICKS: 5, OLD_DASK_START_TICKS: 6}) == 5
    assert recorded_start_ticks({OLD_DASK_START_TICKS: 6}) == 6
    assert recorded_start_ticks({}) is None


@pytest.mark.slow
@pytest.mark.parametrize("ticks_field", [HANDLE_START_TICKS, OLD_DASK_START_TICKS])
def test_a_local_handle_is_reaped_by_the_local_executor_under_another_run_executor(
    leftover: subprocess.Popen[bytes], ticks_field: str
) -> None:
    remote = RemoteStandIn()
    reapers = Reapers(remote, 1.0)  # type: ignore[arg-type]
    assert reapers.reap([_local_handle(leftover.pid, ticks_field)])
    assert leftover.wait(timeout=10) == -15
    assert remote.reaped == []


def test_a_handle_goes_to_the_executor_of_its_kind_and_an_unknown_kind_to_none(
    leftover: subprocess.Popen[bytes],
) -> None:
    remote = RemoteStandIn()
    reapers = Reapers(remote, 1.0)  # type: ignore[arg-type]
    own = {"kind": "remote", "host": "elsewhere", "pgid": 7}
    assert reapers.reap([own])
    assert remote.reaped == [own]
    unknown = _local_handle(leftover.pid, HANDLE_START_TICKS) | {"kind": "cloud"}
    assert not reapers.reap([unknown, {"kind": 3}, {}])
    assert leftover.poll() is None


def test_a_tampered_local_handle_is_refused(leftover: subprocess.Popen[bytes]) -> None:
    handle = _local_handle(leftover.pid, OLD_DASK_START_TICKS)
    handle[OLD_DASK_START_TICKS] -= 1  # a reused pid: another process now
    assert not Reapers(RemoteStandIn(), 1.0).reap([handle])  # type: ignore[arg-type]
    assert leftover.poll() is None
