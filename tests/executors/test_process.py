"""Ending processes through the shared teardown: process groups (`process.end_groups`), adopted
orphans (`end_adopted_orphans`) and a dead run's escaped processes (`end_marked_processes`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from codex_orchestrator.executors.dask.worker import supervisor
from codex_orchestrator.executors.process import (
    end_groups,
    end_marked_processes,
)
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
        ["sh", "-c", "trap '' TERM; sleep 60 & echo ready; wait"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # a SIGTERM sent before the shell ran `trap` would end it: wait until it has
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
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
        if stubborn.stdout is not None:
            stubborn.stdout.close()


IGNORES_TERM = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


@pytest.mark.slow
def test_marked_processes_are_counted_whether_sigterm_or_sigkill_ends_them() -> None:
    """`end_marked_processes` says how many it found, not how many survived SIGTERM: resume
    reports a dead run's escaped processes as ended from that count."""
    marker = f"CODEX_TEST_ESCAPED={os.urandom(8).hex()}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    polite = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    stubborn = subprocess.Popen(
        [sys.executable, "-c", IGNORES_TERM],
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        assert end_marked_processes(marker.encode(), 0, 0.3) == 2
        assert polite.wait(timeout=5) == -signal.SIGTERM
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
    finally:
        for proc in (polite, stubborn):
            proc.kill()
            proc.wait()
        if stubborn.stdout is not None:
            stubborn.stdout.close()


ORPHANS = """
import json, os, subprocess, sys
from codex_orchestrator.executors.process import become_child_subreaper, end_adopted_orphans
from codex_orchestrator.util.procfs import children_of
from helpers.processes import wait_for

assert become_child_subreaper()
# the shell leaves two grandchildren and exits: they are re-parented to this process
subprocess.run(["sh", "-c", "sleep 60 & sh -c 'trap \\"\\" TERM; exec sleep 61' & exit 0"], check=True)

def cmdlines():
    return sorted(
        open(f"/proc/{pid}/cmdline", "rb").read() for pid, zombie in children_of(os.getpid()) if not zombie
    )

# both have exec'd sleep (the second with SIGTERM ignored) before anything is signalled
wait_for(lambda: cmdlines() == [b"sleep\\x0060\\x00", b"sleep\\x0061\\x00"], what="the orphans")
found = end_adopted_orphans([], 0.3)
print(json.dumps({"found": found, "left": len(cmdlines())}))
"""


@pytest.mark.slow
def test_orphans_adopted_by_the_orchestrator_end_through_the_shared_teardown() -> None:
    """A subreaper's orphans: SIGTERM, then SIGKILL for the one that ignores it; all reaped."""
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", ORPHANS], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"found": 2, "left": 0}
