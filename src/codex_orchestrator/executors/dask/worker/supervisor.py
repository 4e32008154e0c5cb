"""Worker-side supervisor of remote stages: a small fork server, one per Dask worker.

A Dask worker starts it once (``remote.Supervisors``) with a Unix socket as file
descriptor ``argv[1]``. For each stage, the worker hands over the socket connected (and
authenticated) to the orchestrator, a "done" socket and the stage's key; the server forks a
supervisor for it, so a stage never waits for an interpreter to start. The supervisor:

- leaves the worker's process group and session at once, so a signal to the worker's group
  (``kill -9 -PGID``) does not end it with the worker while the stage runs on;
- in a TLS cluster, speaks TLS to the orchestrator (the worker's certificate presented, the
  orchestrator's checked against the cluster's CA);
- reads the stage (command, cwd, variables) from the orchestrator, checks its MAC, and runs
  ``/bin/sh -c COMMAND`` as the leader of a new session;
- streams the stage's stdout and stderr back as frames, in bounded chunks, with non-blocking
  sends: it stops reading the stage's pipes while a chunk waits (the orchestrator's reading
  speed is the back-pressure), and is never stuck in a send;
- ends the stage (SIGTERM to its group and to every process that left it, SIGKILL after the
  grace period) when the orchestrator asks, when the Dask worker dies (a pidfd of the
  worker), when the orchestrator falls silent (no keep-alive, or no send progress, for the
  link timeout) and when it is itself sent SIGTERM;
- ends what the shell leaves behind when it exits (helpers do not outlive their stage on a
  worker): being the subreaper of its descendants, it adopts every orphan, including those
  that called ``setsid``, and it never counts a zombie as alive;
- signs its reports (started, shell exit, exit, spawn failure) with the stage's key.

Protocol, after the handshake in ``dask_remote``: frames are ``HEADER`` (kind, length) and a
payload; metadata payloads are JSON followed by an HMAC-SHA256 (`mac`). The orchestrator sends
one ``FRAME_JOB`` and then ``CONTROL`` records (keep-alive, terminate with a grace period, kill).

The file is shipped to workers as source text and run with ``python -I -S -c``, so workers need
no copy of codex-orchestrator; it imports only standard-library modules. The orchestrator
imports it for the protocol constants and `mac`. See docs/executors.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import hmac
import json
import os
import select
import signal
import socket
import ssl
import struct
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

HEADER = struct.Struct(">BI")
JOB_HEADER = struct.Struct(">I")
CONTROL = struct.Struct(">Bd")
CHUNK_BYTES = 1024 * 1024
MAC_BYTES = 32
#: Largest metadata frame in either direction (the job, with the stage's variables, included).
META_LIMIT = 4 * 1024 * 1024
KEEPALIVE_SECONDS = 0.5
#: After the group and its leftovers are gone, how long a pipe held open elsewhere may stay open.
FINAL_DRAIN_SECONDS = 1.0
#: How long SIGKILLed processes may take to vanish before they are given up.
KILL_WAIT_SECONDS = 2.0

FRAME_STDOUT = 1
FRAME_STDERR = 2
FRAME_STARTED = 3
FRAME_ALIVE = 4
FRAME_EXIT = 5
FRAME_SPAWN_FAILED = 6
FRAME_SHELL_EXIT = 7
FRAME_JOB = 8
#: Frames whose payload is signed JSON.
SIGNED_FRAMES = frozenset({FRAME_STARTED, FRAME_EXIT, FRAME_SPAWN_FAILED, FRAME_SHELL_EXIT})

CONTROL_TERMINATE = 1
CONTROL_KILL = 2
CONTROL_ALIVE = 3

#: Why a supervisor ended a stage on its own (the exit report's ``lost``).
LOST_WORKER = "worker-died"
LOST_ORCHESTRATOR = "orchestrator-silent"
LOST_SIGNALLED = "supervisor-signalled"

#: Every remote stage's processes carry this variable (the stage's key): a reap finds those
#: that left the stage's process group after its supervisor died.
STAGE_MARK_ENV = "CODEX_ORCHESTRATOR_STAGE_MARK"
PYTHON_ENV = "CODEX_ORCHESTRATOR_PYTHON"

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SIGTERM = 15
SIGKILL = 9
#: File descriptors handed over with each job: the orchestrator's socket, then "done".
JOB_FDS = 2
#: A non-blocking socket (plain or TLS) that cannot go on now.
WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def mac(key: bytes, kind: int, body: bytes) -> bytes:
    """The signature of a metadata frame of ``kind`` (HMAC-SHA256 with the stage's key)."""
    return hmac.new(key, bytes([kind]) + body, hashlib.sha256).digest()


def start_ticks(pid: int) -> int:
    """The start time of ``pid`` in clock ticks since boot (0 when unknown)."""
    fields = _stat(pid)
    try:
        return int(fields[19]) if fields else 0
    except (ValueError, IndexError):
        return 0


def _stat(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return stat[stat.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return None


def live(pid: int, ticks: int = 0) -> bool:
    """True while ``pid`` runs (not a zombie), with start time ``ticks`` when given."""
    fields = _stat(pid)
    if not fields or fields[0] == b"Z":
        return False
    return not ticks or start_ticks(pid) == ticks


def group_members(pgid: int) -> list[tuple[int, int]]:
    """(pid, start ticks) of the live processes of group ``pgid``; zombies do not count.

    ``killpg(pgid, 0)`` succeeds while a zombie is left in the group (its parent may never reap
    it, e.g. a helper that left the group), so only ``/proc`` tells a live group from a dead one.
    """
    try:
        os.killpg(pgid, 0)
    except OSError:
        return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(name)
            with contextlib.suppress(IndexError, ValueError):
                if fields and fields[0] != b"Z" and int(fields[2]) == pgid:
                    found.append((int(name), int(fields[19])))
    return found


def marked(entry: bytes, since: int) -> list[tuple[int, int]]:
    """(pid, start ticks) of live processes started at or after ``since`` whose environment
    holds ``entry`` (``NAME=value``)."""
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        ticks = start_ticks(int(name))
        if ticks < since or not live(int(name)):
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read(1 << 20)
        except OSError:
            continue
        if entry in environ.split(b"\0"):
            found.append((int(name), ticks))
    return found


def children() -> list[int]:
    """Our live children: from ``/proc/self/task/<tid>/children`` (no full /proc scan)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as listing:
            pids = [int(pid) for pid in listing.read().split()]
    except OSError:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
        pids = [pid for pid in pids if (_stat(pid) or [b"", b""])[1] == str(me).encode()]
    return [pid for pid in pids if live(pid)]


def signal_tree(pid: int, sig: int) -> None:
    """Signal a child we adopted: its whole group when it leads one, else the process."""
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


# --- a verbatim copy of ``executors/teardown.py``'s decisions (this file ships alone) ---

#: Why a stage is being ended (`Teardown.reason`).
TIMEOUT = "timeout"
STOPPED = "stopped"
LEFTOVERS = "leftovers"


class Decision(NamedTuple):
    """What to do now: ``signal`` (0, SIGTERM or SIGKILL) to the stage's processes, the
    monotonic time to decide again at the latest (``wake_at``; None: only on an event), and
    whether nothing of the stage is left to end (``done``)."""

    signal: int
    wake_at: float | None
    done: bool


class Teardown:
    """The decisions of ending one stage (see the module's notes for the rules)."""

    def __init__(
        self, grace: float, started: float, deadline: float | None, end_leftovers: bool
    ) -> None:
        """``started``: the stage's start; ``deadline``: its timeout (both monotonic)."""
        self.grace = grace
        self.started = started
        self.deadline = deadline
        self.end_leftovers = end_leftovers
        self.reason = ""  # TIMEOUT, STOPPED or LEFTOVERS once the stage is being ended
        self.kill_at: float | None = None
        self.killed = False  # SIGKILL was needed to end a timed-out or stopped stage
        self.shell_exited = False

    @property
    def timed_out(self) -> bool:
        """True once the stage's timeout fired."""
        return self.reason == TIMEOUT

    def decide(
        self,
        now: float,
        stop_requested_at: float | None,
        hurry: bool,
        shell_exited: bool,
        leftovers_alive: Callable[[], bool],
    ) -> Decision:
        """What to do at ``now``, given a stop request (when it was made), a second request
        (``hurry``), the shell's exit, and ``leftovers_alive`` (asked only once the shell
        exited: whether anything it left still runs)."""
        known: list[bool] = []

        def alive() -> bool:
            if not known:
                known.append(leftovers_alive())
            return known[0]

        sig = 0
        if not self.reason:
            if not shell_exited and self.deadline is not None and now >= self.deadline:
                self.reason, self.kill_at = TIMEOUT, now + self.grace
            elif stop_requested_at is not None:
                self.reason = STOPPED
                self.kill_at = max(stop_requested_at, self.started) + self.grace
            elif shell_exited and self.end_leftovers and alive():
                self.reason, self.kill_at = LEFTOVERS, now + self.grace
            sig = SIGTERM if self.reason else 0
        elif stop_requested_at is not None and self.reason != TIMEOUT:
            requested = max(stop_requested_at, self.started) + self.grace
            self.kill_at = requested if self.kill_at is None else min(self.kill_at, requested)
        if shell_exited and not self.shell_exited:
            self.shell_exited = True
            if self.reason and not sig:
                sig = SIGTERM  # what the shell left, orphans adopted on its exit included
        if self.kill_at is None:
            waiting = self.deadline is not None and not shell_exited
            return Decision(0, self.deadline if waiting else None, shell_exited)
        if hurry:
            self.kill_at = min(self.kill_at, now)
        if shell_exited and not alive():
            return Decision(0, None, True)
        if sig or now < self.kill_at:
            return Decision(sig, self.kill_at, False)
        if now >= self.kill_at + KILL_WAIT_SECONDS:
            return Decision(0, None, True)  # what is left cannot be killed: give it up
        self.killed = self.killed or self.reason != LEFTOVERS
        return Decision(SIGKILL, self.kill_at + KILL_WAIT_SECONDS, False)


class Stage:
    """The stage's shell, its process group and what it leaves behind, ended as its `Teardown`
    decides: on a stop asked for by the orchestrator or the supervisor itself, and when the
    shell exits (what it left)."""

    def __init__(self, pid: int, grace: float, started: float) -> None:
        self.pid = pid
        self.grace = grace
        self.teardown = Teardown(grace, started, None, end_leftovers=True)
        #: When the earliest stop was asked for, as the teardown counts it (see `stop`).
        self.stop_at: float | None = None
        self.hurry = False
        self.status: int | None = None
        self.shell_exited_at: float | None = None

    def stop(self, grace: float) -> None:
        """End the stage, SIGKILL once ``grace`` (from now) has passed; 0: kill at once."""
        now = time.monotonic()
        # A request to end within ``grace`` counts as one made ``self.grace - grace`` ago.
        at = now - max(0.0, self.grace - grace)
        self.stop_at = at if self.stop_at is None else min(self.stop_at, at)
        self.hurry = self.hurry or grace <= 0

    def step(self, now: float) -> Decision:
        """Apply the teardown's decision at ``now``: signal what it says to signal."""
        decision = self.teardown.decide(
            now,
            self.stop_at,
            self.hurry,
            self.status is not None,
            lambda: not self.gone(),
        )
        if decision.signal:
            self.signal_all(decision.signal)
        return decision

    def signal_all(self, sig: int) -> None:
        """Signal the stage's group and every live child of ours (the shell, adopted orphans)."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, sig)
        for child in children():
            signal_tree(child, sig)

    def reap(self) -> bool:
        """Reap every exited descendant (we are their subreaper); True once the shell exited."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            if pid == self.pid:
                self.status = status
                self.shell_exited_at = time.monotonic()
        return self.status is not None

    def gone(self) -> bool:
        """True once nothing of the stage runs: no live group member, no live child of ours."""
        return not children() and not group_members(self.pid)

    def exit_code(self) -> int | None:
        """Shell convention: killed by signal N is 128+N; None while the shell has not exited."""
        if self.status is None:
            return None
        code = os.waitstatus_to_exitcode(self.status)
        return 128 - code if code < 0 else code


class Channel:
    """The link to the orchestrator: framed, non-blocking sends, control records received.

    A link is broken once a send fails, the orchestrator closed it, nothing came from it (its
    keep-alives come twice a second) for ``timeout`` seconds, or queued output made no progress
    for as long (a partition, or an orchestrator that stopped reading).
    """

    def __init__(self, sock: socket.socket, key: bytes, timeout: float) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.key = key
        self.timeout = timeout
        self.open = True
        self.outbox: list[memoryview] = []
        self.queued = 0
        now = time.monotonic()
        self.last_heard = self.last_progress = self.last_queued = now
        self.partial = b""

    def fileno(self) -> int:
        """The socket's descriptor."""
        return self.sock.fileno()

    def queue(self, kind: int, payload: bytes | memoryview = b"") -> None:
        """Queue one frame (signed when its kind says so) and send what can be sent now."""
        if not self.open:
            return
        if kind in SIGNED_FRAMES:
            payload = bytes(payload) + mac(self.key, kind, bytes(payload))
        if not self.outbox:
            self.last_progress = time.monotonic()
        self.outbox.append(memoryview(HEADER.pack(kind, len(payload))))
        if payload:
            self.outbox.append(memoryview(payload))
        self.queued += HEADER.size + len(payload)
        self.last_queued = time.monotonic()
        self.flush()

    def send_signed(self, kind: int, fields: dict[str, Any]) -> None:
        """Queue a signed metadata frame of ``fields``."""
        self.queue(kind, json.dumps(fields, separators=(",", ":")).encode())

    def flush(self) -> None:
        """Send what the socket takes without blocking."""
        while self.outbox and self.open:
            try:
                if isinstance(self.sock, ssl.SSLSocket):  # the same head again after a retry
                    sent = self.sock.send(self.outbox[0])
                else:
                    sent = self.sock.sendmsg(self.outbox[:16])
            except WOULD_BLOCK:
                return
            except OSError:
                self.close()
                return
            if not sent:
                return  # nothing taken: wait until the socket is writable
            self.queued -= sent
            self.last_progress = time.monotonic()
            while sent:
                head = self.outbox[0]
                if sent >= len(head):
                    sent -= len(head)
                    self.outbox.pop(0)
                else:
                    self.outbox[0] = head[sent:]
                    sent = 0

    def buffered(self) -> bool:
        """True when TLS holds received bytes the socket no longer shows as readable."""
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def controls(self) -> list[tuple[int, float]]:
        """Control records received so far (the link closes when the orchestrator did)."""
        while True:
            try:
                data = self.sock.recv(4096)
            except WOULD_BLOCK:
                break
            except OSError:
                data = b""
            if not data:
                self.close()
                return []
            self.last_heard = time.monotonic()
            self.partial += data
            if not self.buffered():
                break
        records = []
        while len(self.partial) >= CONTROL.size:
            records.append(CONTROL.unpack(self.partial[: CONTROL.size]))
            self.partial = self.partial[CONTROL.size :]
        return records

    def broken(self, now: float) -> bool:
        """True once the link is closed, silent or stalled for the timeout."""
        if self.open and now - self.last_heard > self.timeout:
            self.close()
        if self.open and self.outbox and now - self.last_progress > self.timeout:
            self.close()
        return not self.open

    def drain(self) -> None:
        """Send what is queued, giving up once the link breaks (it never blocks for long)."""
        while self.outbox and not self.broken(time.monotonic()):
            select.select([], [self.sock], [], KEEPALIVE_SECONDS)
            self.flush()

    def close(self) -> None:
        """Mark the link closed; nothing more is sent."""
        self.open = False
        self.outbox.clear()
        self.queued = 0


def read_job(channel: Channel) -> dict[str, Any] | None:
    """The stage, from the orchestrator's signed job frame; None if it is missing or forged."""
    received = b""
    deadline = time.monotonic() + channel.timeout
    length: int | None = None
    while length is None or len(received) < HEADER.size + length:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        if not channel.buffered() and not select.select([channel.sock], [], [], remaining)[0]:
            return None
        try:
            chunk = channel.sock.recv(1 << 16)
        except WOULD_BLOCK:
            continue
        except OSError:
            return None
        if not chunk:
            return None
        received += chunk
        if length is None and len(received) >= HEADER.size:
            kind, length = HEADER.unpack(received[: HEADER.size])
            if kind != FRAME_JOB or not MAC_BYTES < length <= META_LIMIT:
                return None
    channel.last_heard = time.monotonic()
    channel.partial = received[HEADER.size + length :]
    body = received[HEADER.size : HEADER.size + length - MAC_BYTES]
    signature = received[HEADER.size + length - MAC_BYTES : HEADER.size + length]
    if not hmac.compare_digest(signature, mac(channel.key, FRAME_JOB, body)):
        return None
    job: dict[str, Any] = json.loads(body)
    return job


def spawn(command: str, env: dict[str, str], stdout_w: int, stderr_w: int) -> int:
    """Start ``/bin/sh -c command`` in a new session with the pipes as stdout and stderr."""
    return os.posix_spawn(
        "/bin/sh",
        ["/bin/sh", "-c", command],
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, stdout_w, 1),
            (os.POSIX_SPAWN_DUP2, stderr_w, 2),
        ],
        setsid=True,
        # SIGINT (ignored by the server), SIGPIPE and SIGXFSZ (ignored by Python): default again
        setsigdef=(signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ),
    )


def reap(pgid: int, leader_ticks: int, grace: float, mark: str) -> int:
    """End what a stage whose supervisor is gone left: its group, if verified to be the
    stage's, and processes carrying its mark that started with it or later (those that left
    the group). Exit 0 when something was ended, 1 when nothing of it was left.

    The group's leader, when alive, must have the recorded start time; without a leader, no
    member may be older than the recorded leader (Linux does not reuse a pid while its group
    lives). The same rules as the local executor's, restated: this file runs on workers alone.
    """
    members = group_members(pgid) if pgid > 1 else []
    leader = start_ticks(pgid)
    if (leader and leader != leader_ticks) or any(t < leader_ticks for _p, t in members):
        members = []  # the id now belongs to other processes: not ours to signal
    entry = f"{STAGE_MARK_ENV}={mark}".encode()
    targets = dict(members) | dict(marked(entry, leader_ticks) if mark else [])
    found = bool(targets)
    # What a stage left, ended as its supervisor would have: SIGTERM, SIGKILL after the grace.
    teardown = Teardown(grace, time.monotonic(), None, end_leftovers=True)
    while True:
        decision = teardown.decide(time.monotonic(), None, False, True, partial(bool, targets))
        for pid, ticks in targets.items() if decision.signal else ():
            if live(pid, ticks):
                with contextlib.suppress(OSError):
                    os.kill(pid, decision.signal)
        if decision.done:
            return 0 if found else 1
        time.sleep(0.02)
        targets = {pid: ticks for pid, ticks in targets.items() if live(pid, ticks)}


def receive_job(link: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """The next stage from the worker: its hand-over and descriptors; None once closed."""
    head, fds, _flags, _address = socket.recv_fds(link, JOB_HEADER.size, JOB_FDS)
    while fds and 0 < len(head) < JOB_HEADER.size:
        head += link.recv(JOB_HEADER.size - len(head))
    body = b""
    if len(head) == JOB_HEADER.size and len(fds) == JOB_FDS:
        (length,) = JOB_HEADER.unpack(head)
        while len(body) < length and (chunk := link.recv(length - len(body))):
            body += chunk
        if len(body) == length:
            for fd in fds:  # the stage must not hold the orchestrator's socket open
                os.set_inheritable(fd, False)
            return json.loads(body), fds
    for fd in fds:
        os.close(fd)
    return None  # the worker closed the link (it let us go, or it died)


def serve(jobs: int, worker_pid: int) -> int:
    """The fork server: one supervisor process per stage handed over on ``jobs``.

    Single-threaded, so forking is safe. It imports all the supervisors need before the first
    fork, and leaves reaping them to the kernel (SIGCHLD ignored).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0)  # idle or busy, we end with the worker
    if os.getppid() != worker_pid:
        return 1
    # A Ctrl-C to the worker's terminal reaches its whole process group: the worker then shuts
    # down, and its death ends stages in order (reported lost), not a traceback mid-stage.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    with socket.socket(fileno=jobs) as link:
        while (received := receive_job(link)) is not None:
            job, (channel_fd, done_fd) = received
            try:
                child = os.fork()
            except OSError as error:  # out of processes or memory: say so, not "worker lost"
                message = f"cannot fork the stage's supervisor: {error.strerror or error}"
                with socket.socket(fileno=os.dup(channel_fd)) as sock:
                    channel = Channel(sock, bytes.fromhex(job["key"]), 1.0)
                    channel.send_signed(FRAME_SPAWN_FAILED, {"message": message})
                    channel.drain()
                child = -1
            if child == 0:
                code = 1
                try:
                    link.close()
                    code = supervise_job(libc, job, channel_fd, done_fd, worker_pid)
                except BaseException:  # said in the worker's log; the orchestrator sees a loss
                    traceback.print_exc()
                finally:  # never back into the server's loop, whatever happened
                    os._exit(code)
            os.close(channel_fd)
            os.close(done_fd)
    return 0


def supervise_job(
    libc: Any, job: dict[str, Any], channel_fd: int, done_fd: int, worker_pid: int
) -> int:
    """In the forked supervisor: run the job's stage; "done" gets the code and then closes."""
    # Out of the worker's process group and session: a signal to the worker's group (a
    # process manager's "kill the group") must not end the supervisor while the stage runs.
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # we wait for the stage and its orphans
    # Orphans of the stage become our children, so they are reaped and ended with the stage.
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(SIGTERM, lambda *_: None)
    timeout = float(job["link_timeout"])
    with socket.socket(fileno=channel_fd) as plain:
        sock = plain
        if job["tls"] is not None:  # a TLS cluster: so is the link, both ends authenticated
            plain.settimeout(timeout)
            try:
                sock = tls_context(job["tls"]).wrap_socket(plain)
            except (OSError, ValueError):
                return 1  # nothing ran; the orchestrator records the stage as not started
        channel = Channel(sock, bytes.fromhex(job["key"]), timeout)
        worker = Worker(worker_pid)
        if not worker.alive():
            channel.send_signed(FRAME_SPAWN_FAILED, {"message": "the Dask worker died"})
            channel.drain()
            return 1
        code = run_stage(job, channel, wake_r, worker)
    with contextlib.suppress(OSError):
        os.write(done_fd, str(code).encode())
    return code


def tls_context(files: dict[str, str]) -> ssl.SSLContext:
    """The worker's side of a TLS link: its certificate presented, the orchestrator's checked
    against the cluster's CA (not against a host name, as Dask does)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if "\n" in files["ca"]:
        context.load_verify_locations(cadata=files["ca"])
    else:
        context.load_verify_locations(cafile=files["ca"])
    context.load_cert_chain(_pem_path(files["cert"]), _pem_path(files["key"]))
    return context


def _pem_path(value: str) -> str:
    """A path for a PEM file: itself, or a memory file for PEM text Dask keeps in memory."""
    if "\n" not in value:
        return value
    fd = os.memfd_create("pem")
    os.write(fd, value.encode())
    return f"/proc/self/fd/{fd}"


class Worker:
    """The Dask worker process whose death ends the stage: a pidfd, else its start time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ticks = start_ticks(pid)
        try:
            self.fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.fd = -1  # no pidfd (old kernel): each pass checks the pid and start time

    def alive(self) -> bool:
        """True while the worker process runs."""
        if self.fd >= 0:
            return not select.select([self.fd], [], [], 0)[0]
        return live(self.pid, self.ticks)


def main(argv: list[str]) -> int:
    """Serve stages handed over on the socket ``argv[1]`` by worker ``argv[2]`` (see `serve`).

    ``reap PGID TICKS GRACE MARK`` ends a leftover stage instead (see `reap`).
    """
    if argv[1] == "reap":
        return reap(int(argv[2]), int(argv[3]), float(argv[4]), argv[5])
    return serve(int(argv[1]), int(argv[2]))


def run_stage(job: dict[str, Any], channel: Channel, wake_r: int, worker: Worker) -> int:
    """Read the stage, start its command, stream it until it is over, send the exit report."""
    stage_job = read_job(channel)
    if stage_job is None:
        return 1  # the orchestrator never sent a valid stage: nothing ran
    cwd, command = stage_job["cwd"], stage_job["command"]
    env = {**os.environ, **stage_job["env"], PYTHON_ENV: job["python"]}
    try:
        os.chdir(cwd)
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        for pipe in (stdout_r, stderr_r):
            # A pipe as large as a chunk: fewer wake-ups per megabyte (best effort).
            with contextlib.suppress(OSError):
                fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, CHUNK_BYTES)
        started = time.monotonic()
        pid = spawn(command, env, stdout_w, stderr_w)
    except OSError as error:
        message = f"{error.strerror or error} ({cwd})"
        channel.send_signed(FRAME_SPAWN_FAILED, {"message": message})
        channel.drain()
        return 1
    os.close(stdout_w)
    os.close(stderr_w)
    stage = Stage(pid, float(stage_job["grace"]), started)
    started_fields = {
        "pid": pid,
        "start_ticks": start_ticks(pid),
        "worker_pid": worker.pid,
        "host": os.uname().nodename,
        "worker": job["worker"],
    }
    channel.send_signed(FRAME_STARTED, started_fields)
    streams = {stdout_r: FRAME_STDOUT, stderr_r: FRAME_STDERR}
    lost = Supervision(stage, channel, streams, wake_r, worker).run(started)
    exited = stage.shell_exited_at
    report = {
        "code": stage.exit_code(),
        "killed": stage.teardown.killed,
        "lost": lost,
        "duration": (exited or time.monotonic()) - started,
    }
    channel.send_signed(FRAME_EXIT, report)
    channel.drain()
    return 0


class Supervision:
    """The supervisor's loop: stream the output, answer the orchestrator, watch the worker, and
    end the stage and what it leaves behind."""

    def __init__(
        self, stage: Stage, channel: Channel, streams: dict[int, int], wake_r: int, worker: Worker
    ) -> None:
        self.stage = stage
        self.channel = channel
        self.streams = streams
        self.wake_r = wake_r
        self.worker = worker
        self.lost: str | None = None
        #: When output was last read, or held back for the orchestrator (back-pressure).
        self.last_output = time.monotonic()
        try:
            self.shell_fd = os.pidfd_open(stage.pid)  # readable once the shell exits
        except (AttributeError, OSError):
            self.shell_fd = -1

    def run(self, started: float) -> str | None:
        """Stream until the shell exited and its leftovers are gone (or cannot be ended); why
        the stage was lost (`LOST_WORKER`, `LOST_ORCHESTRATOR`, `LOST_SIGNALLED`), or None."""
        stage, channel = self.stage, self.channel
        while True:
            now = time.monotonic()
            if stage.shell_exited_at is None and stage.reap():
                duration = now - started
                channel.send_signed(
                    FRAME_SHELL_EXIT, {"code": stage.exit_code(), "duration": duration}
                )
            elif stage.shell_exited_at is not None:
                stage.reap()
            if channel.broken(now):
                self._lose(LOST_ORCHESTRATOR)  # the orchestrator is gone or silent: so is the stage
            if self.worker.fd < 0 and not self.worker.alive():
                self._lose(LOST_WORKER)
            # Helpers the shell left behind end with their stage (``end_leftovers``).
            if stage.step(now).done:
                # Output still flowing (or waiting for the orchestrator) is delivered; pipes a
                # process outside our reach holds open, with nothing in them, are not waited on.
                # What cannot be killed (uninterruptible sleep) is reported so at once.
                drained = not self.streams or now - self.last_output > FINAL_DRAIN_SECONDS
                if drained or not stage.gone():
                    break
            if channel.open and now - channel.last_queued >= KEEPALIVE_SECONDS:
                channel.queue(FRAME_ALIVE)
            self._poll(20 if stage.teardown.reason else 100)
        stage.reap()
        return self.lost

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
            self.stage.stop(self.stage.grace)

    def _poll(self, wait_ms: int) -> None:
        """Wait for the next event and handle it."""
        channel, poller = self.channel, select.poll()
        if channel.queued < CHUNK_BYTES:  # back-pressure: read the stage only when a chunk fits
            for fd in self.streams:
                poller.register(fd, select.POLLIN)
        else:
            self.last_output = time.monotonic()
        if channel.open:
            writing = select.POLLOUT if channel.outbox else 0
            poller.register(channel.fileno(), select.POLLIN | writing)
        for fd in (self.wake_r, self.worker.fd, self.shell_fd):
            if fd >= 0:
                poller.register(fd, select.POLLIN)
        for fd, event in poller.poll(0 if channel.open and channel.buffered() else wait_ms):
            if fd in self.streams:
                data = os.read(fd, CHUNK_BYTES)
                if data:
                    self.last_output = time.monotonic()
                    channel.queue(self.streams[fd], data)
                else:
                    del self.streams[fd]
            elif fd == channel.fileno() and channel.open:
                if event & select.POLLOUT:
                    channel.flush()
                if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self._control(channel.controls())
            elif fd == self.wake_r:
                os.read(self.wake_r, 512)
                self._lose(LOST_SIGNALLED)
            elif fd == self.worker.fd:
                self.worker.fd = -2  # it exited: stop watching it
                self._lose(LOST_WORKER)
            elif fd == self.shell_fd:
                os.close(self.shell_fd)
                self.shell_fd = -1  # the next pass reaps it
        if channel.open and channel.buffered():
            self._control(channel.controls())

    def _control(self, records: list[tuple[int, float]]) -> None:
        for kind, grace in records:
            if kind == CONTROL_KILL:
                self.stage.stop(0.0)
            elif kind == CONTROL_TERMINATE:
                self.stage.stop(grace)


if __name__ == "__main__":
    os._exit(main(sys.argv))
