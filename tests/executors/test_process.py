"""Ending process groups through the shared teardown (`process.end_groups`)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from codex_orchestrator.executors.dask.worker import supervisor
from codex_orchestrator.executors.process import end_groups
from codex_orchestrator.util.procfs import process_start_ticks, process_state
from helpers.processes import wait_for


def test_a_group_of_zombies_ends_at_once_without_reading_a_closed_hurry_descriptor() -> None:
    """`close` may get the hurry descriptor of a child run's cancellation, closed when that run
    ended; a group whose only member is an unreaped zombie still takes a signal, but nothing
    in it runs, so there is nothing to hurry and the descriptor must not be read."""
    zombie = subprocess.Popen(["true"], start_new_session=True)
    try:
        wait_for(lambda: process_state(zombie.pid) == "Z", what="the zombie")
        read_end, write_end = os.pipe()
        os.close(read_end)
        os.close(write_end)
        assert end_groups([zombie.pid], 5.0, read_end) is False
    finally:
        zombie.wait()


@pytest.mark.slow
def test_the_worker_side_reap_ends_a_verified_group_as_its_supervisor_would() -> None:
    stubborn = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 60 & wait"], start_new_session=True
    )
    try:
        ticks = process_start_ticks(stubborn.pid)
        assert ticks is not None
        assert supervisor.reap(stubborn.pid, ticks - 1, 0.2, "") == 1  # another process now
        assert stubborn.poll() is None
        assert supervisor.reap(stubborn.pid, ticks, 0.2, "") == 0  # SIGKILL after the grace
        assert stubborn.wait(timeout=10) == -signal.SIGKILL
        assert supervisor.reap(stubborn.pid, ticks, 0.2, "") == 1  # nothing left
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
        stubborn.wait()
