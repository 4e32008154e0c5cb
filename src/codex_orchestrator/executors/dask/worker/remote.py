"""The function Dask runs on a worker for each stage: prove the worker is the stage's, then
hand the stage to a supervisor.

Standard library only: the orchestrator sends this module's source text with each task and a
worker compiles it once (``entry.call``), so a worker needs Python and Dask, not a copy of
codex-orchestrator. The orchestrator imports it for the handshake's constants and functions.

The handshake on the connection a task opens to the orchestrator (the task spec, which every
client of the scheduler can read, carries only the callback address and two public ids)::

    task -> orchestrator: HELLO, session, stage, nonce, has-key, worker address
                          [+ proof = HMAC(worker key, session, stage, nonce, worker address)]
    orchestrator -> task: KEYED, when the worker had no key yet: the orchestrator gave it one
                          over Dask's own connection to that worker; the task then sends its proof
    orchestrator -> task: ACCEPTED, once, for the first valid proof of the stage

The worker key is never in a task spec and never passes through the scheduler, so a client of
the scheduler that read the spec can neither pass for the stage's task nor sign its reports
(the stage key that signs them derives from the worker key). The stage id is random and its
door admits one caller, so a proof cannot be replayed. See docs/executors.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

HELLO = b"codex-orchestrator-stage/2\n"
#: After `HELLO`: session id, stage id, the task's nonce, has-key flag, worker address length.
HELLO_FIELDS = struct.Struct(">16s16s16sBH")
NONCE_BYTES = 16
PROOF_BYTES = 32
ACCEPTED = b"A"
KEYED = b"K"
MAX_WORKER_ADDRESS = 512
#: Where a worker keeps the keys orchestrators gave it (``{session: key}``).
KEYS_ATTRIBUTE = "_codex_orchestrator_keys"
#: The length prefix of a job, as ``supervisor.JOB_HEADER`` (which this module cannot
#: import: it runs as a separate program on workers).
JOB_HEADER = ">I"
NOT_RUN = "not-run"


def proof(key: bytes, session: bytes, stage: bytes, nonce: bytes, worker: bytes) -> bytes:
    """What the task shows the orchestrator: that it holds the worker's key."""
    return hmac.new(key, b"proof\0" + session + stage + nonce + worker, hashlib.sha256).digest()


def stage_key(key: bytes, session: bytes, stage: bytes, nonce: bytes) -> bytes:
    """The key that signs one stage's reports and its job, derived from the worker key."""
    return hmac.new(key, b"stage\0" + session + stage + nonce, hashlib.sha256).digest()


def tune_link(sock: socket.socket, timeout: float) -> None:
    """Let the kernel end a connection whose peer vanished (no ACK or keep-alive answer for
    ``timeout`` seconds), beside the supervisor's and the orchestrator's own deadlines."""
    seconds = max(1, int(timeout))
    for level, option, value in (
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 0), max(1, seconds // 2)),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 0), 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 0), max(1, seconds // 2)),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 0), int(timeout * 1000)),
    ):
        if option:
            try:
                sock.setsockopt(level, option, value)
            except OSError:
                continue  # best effort: the deadlines in the protocol do not depend on it


class ForkServer:
    """A running ``dask_supervisor`` fork server and the socket that hands it stages."""

    def __init__(self, process: subprocess.Popen[bytes], jobs: socket.socket) -> None:
        self.process = process
        self.jobs = jobs
        self.lock = threading.Lock()  # one job's message at a time on the shared socket

    def hand_over(self, fds: list[int], job: Mapping[str, Any]) -> None:
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

    def hand_over(self, fds: list[int], job: Mapping[str, Any]) -> None:
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
    session: bytes,
    stage: bytes,
    supervisor_source: str,
    link_timeout: float,
) -> str:
    """Connect back to the orchestrator, prove this is the stage's worker, and hand the stage
    to a supervisor process, which reads the stage from the orchestrator and runs it.

    The orchestrator accepts the first valid proof for a stage and no other, so a task that
    Dask re-runs after losing a worker is declined and returns ``not-run``: a stage starts at
    most once. The task lasts as long as the stage, so Dask's accounting of threads and
    resources holds while it runs.
    """
    from distributed import get_worker

    worker = get_worker()
    address = str(worker.address).encode()
    keys: dict[bytes, bytes] = worker.__dict__.setdefault(KEYS_ATTRIBUTE, {})
    try:
        channel = socket.create_connection(callback, timeout=3 * link_timeout)
    except OSError as error:
        return f"{NOT_RUN}: cannot reach the orchestrator at {callback[0]}:{callback[1]} ({error})"
    with channel:
        tune_link(channel, link_timeout)
        nonce = os.urandom(NONCE_BYTES)
        key = keys.get(session)
        fields = HELLO_FIELDS.pack(session, stage, nonce, key is not None, len(address))
        try:
            hello = HELLO + fields + address
            proved = key is not None
            if key is not None:  # the usual case: the proof goes with the hello
                hello += proof(key, session, stage, nonce, address)
            channel.sendall(hello)
            answer = channel.recv(1)
            if answer == KEYED:  # the orchestrator handed this worker its key just now
                key = keys.get(session)
                if key is not None and not proved:
                    channel.sendall(proof(key, session, stage, nonce, address))
                answer = channel.recv(1)
            if answer != ACCEPTED or key is None:
                return f"{NOT_RUN}: the orchestrator declined (the stage already started elsewhere)"
        except OSError as error:
            return f"{NOT_RUN}: the orchestrator closed the connection ({error})"
        handover = {
            "key": stage_key(key, session, stage, nonce).hex(),
            "worker": address.decode(),
            "link_timeout": link_timeout,
            "python": sys.executable,
            "tls": _tls_files(worker),
        }
        done, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            supervisors(supervisor_source).hand_over([channel.fileno(), theirs.fileno()], handover)
    # Only the supervisor holds the two sockets now: "done" ends when it exits.
    with done:
        return f"exited {_read_to_end(done) or 'without a report'}"


def _tls_files(worker: Any) -> dict[str, str] | None:
    """In a TLS cluster, the worker's CA, certificate and key (paths, or PEM text Dask keeps in
    memory): the supervisor speaks TLS to the orchestrator with them."""
    security = worker.security
    if not str(worker.address).startswith("tls://"):
        return None
    return {
        "ca": security.tls_ca_file,
        "cert": security.tls_worker_cert,
        "key": security.tls_worker_key,
    }


def _read_to_end(link: socket.socket) -> str:
    received = b""
    while chunk := link.recv(64):
        received += chunk
    return received.decode("ascii", "replace")
