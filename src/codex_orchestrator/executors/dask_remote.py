"""The functions Dask runs on a worker: hand a stage to a supervisor, reap a leftover group.

Standard library only: the orchestrator pickles this module by value, so a worker needs Python
and Dask, not a copy of codex-orchestrator. See docs/executors.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping

HELLO = b"codex-orchestrator-stage/1 "
GO = b"G"
CONNECT_TIMEOUT_SECONDS = 10.0
#: The length prefix of a job, as ``dask_supervisor.JOB_HEADER`` (which this module cannot
#: import); a format string, because module globals travel to workers by pickle.
JOB_HEADER = ">I"
#: Supervisors kept booted per worker, so a stage does not wait for an interpreter to start.
SPARES = 2
NOT_RUN = "not-run"


class Spare:
    """A booted supervisor process waiting for its stage on ``jobs``."""

    def __init__(self, process: subprocess.Popen[bytes], jobs: socket.socket) -> None:
        self.process = process
        self.jobs = jobs

    def hand_over(self, channel: int, job: Mapping[str, object]) -> None:
        """Give the supervisor its stage and the socket connected to the orchestrator."""
        body = json.dumps(job).encode()
        with self.jobs:
            socket.send_fds(self.jobs, [struct.pack(JOB_HEADER, len(body))], [channel])
            self.jobs.sendall(body)


def boot(source: str) -> Spare:
    """Start a supervisor process that waits for a stage."""
    jobs, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with theirs:
        argv = [sys.executable, "-I", "-S", "-c", source, str(theirs.fileno()), str(os.getpid())]
        process = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
    return Spare(process, jobs)


class Supervisors:
    """Boots supervisors ahead of need, from one thread that lives as long as the worker.

    The parent-death signal of a process fires when the *thread* that started it ends, so
    spares come from this thread and never from a task's thread, which Dask may retire.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.requests: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.ready: queue.SimpleQueue[Spare | OSError] = queue.SimpleQueue()
        threading.Thread(target=self._boot_loop, name="codex-supervisors", daemon=True).start()
        for _ in range(SPARES):
            self.requests.put(True)

    def _boot_loop(self) -> None:
        while self.requests.get():
            try:
                self.ready.put(boot(self.source))
            except OSError as error:
                self.ready.put(error)

    def take(self) -> Spare:
        """A booted supervisor (waiting for the one being booted if none is ready yet)."""
        while True:
            self.requests.put(True)
            spare = self.ready.get()
            if isinstance(spare, OSError):
                raise spare
            if spare.process.poll() is None:
                return spare
            spare.jobs.close()


def supervisors(source: str) -> Supervisors | None:
    """This worker's supervisor pool for ``source`` (None outside a Dask worker)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    pools: dict[str, Supervisors] = worker.__dict__.setdefault("_codex_orchestrator_pools", {})
    key = hashlib.sha256(source.encode()).hexdigest()
    if key not in pools:
        pools[key] = Supervisors(source)
    return pools[key]


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
        pool = supervisors(supervisor_source)
        # Without a pool this thread starts the supervisor and stays in wait() for the whole
        # stage, so the parent-death signal still fires only with the worker.
        spare = pool.take() if pool is not None else boot(supervisor_source)
        job = {
            "command": command,
            "cwd": cwd,
            "env": dict(env),
            "grace": grace_seconds,
            "worker": _worker_address(),
        }
        spare.hand_over(channel.fileno(), job)
    return f"exited {spare.process.wait()}"


def reap_on_worker(
    supervisor_source: str, host: str, pgid: int, leader_start_ticks: int, grace_seconds: float
) -> bool:
    """End process group ``pgid`` if it is still the recorded stage's; True if it did."""
    if os.uname().nodename != host:
        return False  # the worker's address now belongs to another machine
    argv = [sys.executable, "-I", "-S", "-c", supervisor_source, "reap"]
    argv += [str(pgid), str(leader_start_ticks), repr(grace_seconds)]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, check=False).returncode == 0


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return ""
