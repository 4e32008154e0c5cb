"""The functions Dask runs on a worker: hand a stage to a supervisor, reap a leftover group.

Standard library only: the orchestrator sends this module's source text with each task and a
worker compiles it once (``dask_entry.call``), so a worker needs Python and Dask, not a copy of
codex-orchestrator. See docs/executors.md.
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
#: import: it runs as a separate program on workers).
JOB_HEADER = ">I"
NOT_RUN = "not-run"


class ForkServer:
    """A running ``dask_supervisor`` fork server and the socket that hands it stages."""

    def __init__(self, process: subprocess.Popen[bytes], jobs: socket.socket) -> None:
        self.process = process
        self.jobs = jobs
        self.lock = threading.Lock()  # one job's message at a time on the shared socket

    def hand_over(self, fds: list[int], job: Mapping[str, object]) -> None:
        """Give the server a stage and its descriptors; OSError if the server is gone."""
        body = json.dumps(job).encode()
        with self.lock:
            socket.send_fds(self.jobs, [struct.pack(JOB_HEADER, len(body))], fds)
            self.jobs.sendall(body)


def boot(source: str) -> ForkServer:
    """Start a fork server for this worker process."""
    jobs, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with theirs:
        argv = [sys.executable, "-I", "-S", "-c", source, str(theirs.fileno()), str(os.getpid())]
        process = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
    return ForkServer(process, jobs)


class Supervisors:
    """This worker's fork server, started (and restarted) by a thread that lives as long as
    the worker.

    The parent-death signal of a process fires when the *thread* that started it ends, so the
    server comes from this thread and never from a task's thread, which Dask may retire.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.requests: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.booted: queue.SimpleQueue[ForkServer | OSError] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.booter: threading.Thread | None = None
        self.server: ForkServer | None = None

    def _boot_loop(self) -> None:
        while self.requests.get():
            try:
                self.booted.put(boot(self.source))
            except OSError as error:
                self.booted.put(error)

    def hand_over(self, fds: list[int], job: Mapping[str, object]) -> None:
        """Hand a stage to the fork server, starting a new one if there is none or it died."""
        for attempt in (1, 2):
            server = self._running()
            try:
                server.hand_over(fds, job)
                return
            except OSError:
                if attempt == 2:
                    raise
                self._forget(server)

    def _running(self) -> ForkServer:
        with self.lock:
            if self.booter is None:
                self.booter = threading.Thread(
                    target=self._boot_loop, name="codex-supervisors", daemon=True
                )
                self.booter.start()
            if self.server is not None and self.server.process.poll() is not None:
                self._forget(self.server)
            if self.server is None:
                self.requests.put(True)
                booted = self.booted.get()
                if isinstance(booted, OSError):
                    raise booted
                self.server = booted
            return self.server

    def _forget(self, server: ForkServer) -> None:
        server.jobs.close()
        if self.server is server:
            self.server = None


def supervisors(source: str) -> Supervisors:
    """This worker's supervisor pool for ``source`` (one per orchestrator version)."""
    from distributed import get_worker

    pools: dict[str, Supervisors] = get_worker().__dict__.setdefault(
        "_codex_orchestrator_pools", {}
    )
    key = hashlib.sha256(source.encode()).hexdigest()
    # setdefault is atomic: tasks starting at once on a multi-threaded worker share one pool
    # (a pool starts nothing until it is used, so the ones that lose the race cost nothing).
    return pools.get(key) or pools.setdefault(key, Supervisors(source))


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
    a stage starts at most once. The task lasts as long as the stage, so Dask's accounting of
    threads and resources holds while it runs.
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
        job = {
            "command": command,
            "cwd": cwd,
            "env": dict(env),
            "grace": grace_seconds,
            "worker": _worker_address(),
        }
        done, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            supervisors(supervisor_source).hand_over([channel.fileno(), theirs.fileno()], job)
    # Only the supervisor holds the two sockets now: "done" ends when it exits.
    with done:
        return f"exited {_read_to_end(done) or 'without a report'}"


def _read_to_end(link: socket.socket) -> str:
    received = b""
    while chunk := link.recv(64):
        received += chunk
    return received.decode("ascii", "replace")


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
    from distributed import get_worker

    return str(get_worker().address)
