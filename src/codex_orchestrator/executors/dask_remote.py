"""The functions Dask runs on a worker: start a stage's supervisor, reap a leftover group.

Standard library only: the orchestrator pickles this module by value, so a worker needs Python
and Dask, not a copy of codex-orchestrator. See docs/executors.md.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping

HELLO = b"codex-orchestrator-stage/1 "
GO = b"G"
CONNECT_TIMEOUT_SECONDS = 10.0

NOT_RUN = "not-run"


def run_stage_on_worker(
    callback: tuple[str, int],
    token: bytes,
    supervisor_source: str,
    command: str,
    cwd: str,
    env: Mapping[str, str],
    grace_seconds: float,
) -> str:
    """Run one stage through a supervisor process whose output goes to ``callback``.

    The orchestrator answers the first connection carrying ``token`` and no other, so a task
    that Dask re-runs after losing a worker finds the door closed and returns ``not-run``:
    a stage starts at most once.
    """
    try:
        channel = socket.create_connection(callback, timeout=CONNECT_TIMEOUT_SECONDS)
    except OSError as error:
        return f"{NOT_RUN}: cannot reach the orchestrator at {callback[0]}:{callback[1]} ({error})"
    with channel:
        try:
            channel.sendall(HELLO + token)
            if channel.recv(1) != GO:
                return f"{NOT_RUN}: the orchestrator declined (the stage already started elsewhere)"
        except OSError as error:
            return f"{NOT_RUN}: the orchestrator closed the connection ({error})"
        channel.setblocking(True)
        argv = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            supervisor_source,
            str(channel.fileno()),
            str(os.getpid()),
            repr(grace_seconds),
            cwd,
            command,
            _worker_address(),
        ]
        supervisor = subprocess.Popen(
            argv, env=dict(env), pass_fds=(channel.fileno(),), stdin=subprocess.DEVNULL
        )
    # This thread stays in wait() for the whole stage: the supervisor's parent-death signal
    # fires when the thread that started it ends, which must only happen with the worker.
    return f"exited {supervisor.wait()}"


def reap_on_worker(
    supervisor_source: str, pgid: int, leader_start_ticks: int, grace_seconds: float
) -> bool:
    """End process group ``pgid`` if it still runs with the recorded leader; True if it did."""
    argv = [sys.executable, "-I", "-S", "-c", supervisor_source, "reap"]
    argv += [str(pgid), str(leader_start_ticks), repr(grace_seconds)]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, check=False).returncode == 0


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return ""
