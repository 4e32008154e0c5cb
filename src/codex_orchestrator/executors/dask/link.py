"""The orchestrator's end of a remote stage's link: the door the stage's task knocks on, the
checks every frame from a supervisor passes, and following a started stage to its end.

The task proves it runs on a worker this orchestrator gave a key to (``dask_remote`` describes
the handshake); the supervisor's reports are signed with a key derived from it. Every field of
every report is checked here, in one place: a forged, malformed or out-of-range frame ends the
link and the stage is recorded lost, never with the frame's values. See docs/executors.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hmac
import json
import math
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from codex_orchestrator.executors.base import (
    HANDLE_HOST,
    HANDLE_KIND,
    HANDLE_PGID,
    HANDLE_PID,
    HANDLE_REMOTE_END,
    HANDLE_REMOTE_ENDS_BY,
    HANDLE_SCHEDULER,
    HANDLE_STAGE_MARK,
    HANDLE_START_TICKS,
    HANDLE_WORKER,
    HANDLE_WORKER_PID,
    Cancellation,
    Handle,
    StageOutcome,
    StageRequest,
)
from codex_orchestrator.executors.dask.worker.remote import (
    ACCEPTED,
    HELLO,
    HELLO_FIELDS,
    KEYED,
    MAX_WORKER_ADDRESS,
    PROOF_BYTES,
    proof,
    stage_key,
    tune_link,
)
from codex_orchestrator.executors.dask.worker.supervisor import (
    CHUNK_BYTES,
    CONTROL,
    CONTROL_ALIVE,
    CONTROL_KILL,
    CONTROL_TERMINATE,
    FRAME_ALIVE,
    FRAME_EXIT,
    FRAME_JOB,
    FRAME_SHELL_EXIT,
    FRAME_SPAWN_FAILED,
    FRAME_STARTED,
    FRAME_STDERR,
    FRAME_STDOUT,
    HEADER,
    KEEPALIVE_SECONDS,
    LOST_ORCHESTRATOR,
    LOST_SIGNALLED,
    LOST_WORKER,
    MAC_BYTES,
    SIGNED_FRAMES,
    WOULD_BLOCK,
    mac,
)
from codex_orchestrator.executors.logfiles import LogFiles, write_all
from codex_orchestrator.executors.teardown import KILL_WAIT_SECONDS, SIGKILL, SIGTERM, Teardown
from codex_orchestrator.util.numeric import finite
from codex_orchestrator.util.procfs import checked_pid

#: The executor's name: the kind of its stages' handles.
KIND = "dask"
POLL_SECONDS = 0.1
RECEIVE_BYTES = 1 << 20
#: Largest signed report from a supervisor (reports are a few hundred bytes).
REPORT_LIMIT = 16 * 1024
#: Callers knocking at one stage's door at once; more are turned away, oldest first.
MAX_CALLERS = 32
#: After the stage was told to stop (or its shell exited), how long beyond its grace period
#: and the supervisor's own bounds to wait for the exit report.
REPORT_MARGIN_SECONDS = 5.0
MAX_DURATION_SECONDS = 1e8
MAX_TEXT = 4096
#: The bytes queued to a supervisor that never reads them before the link counts as broken.
OUTBOX_LIMIT = 64 * 1024


class ProtocolError(Exception):
    """A frame that breaks the protocol: forged, malformed, or out of range."""


class Link(NamedTuple):
    """An admitted stage's connection, the key that signs its frames, and its worker."""

    sock: socket.socket
    key: bytes
    worker: str


# --- every report field is checked here ------------------------------------------------------


def _pid(value: object) -> int:
    pid = checked_pid(value)
    if pid is None:
        raise ProtocolError(f"not a process id: {value!r:.40}")
    return pid


def _ticks(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ProtocolError(f"not a start time: {value!r:.40}")
    return value


def _seconds(value: object) -> float:
    number = finite(value)
    if number is None or not 0 <= number <= MAX_DURATION_SECONDS:
        raise ProtocolError(f"not a duration: {value!r:.40}")
    return number


def _exit_code(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ProtocolError(f"not an exit code: {value!r:.40}")
    return value


def _exit_code_or_none(value: object) -> int | None:
    return None if value is None else _exit_code(value)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"not true or false: {value!r:.40}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT or not value.isprintable():
        raise ProtocolError(f"not a line of text: {value!r:.40}")
    return value


def _lost(value: object) -> str | None:
    if value not in (None, LOST_WORKER, LOST_ORCHESTRATOR, LOST_SIGNALLED):
        raise ProtocolError(f"not a reason for a lost stage: {value!r:.40}")
    return value


REPORT_FIELDS: dict[int, dict[str, Callable[[object], object]]] = {
    FRAME_STARTED: {
        "pid": _pid,
        "start_ticks": _ticks,
        "worker_pid": _pid,
        "host": _text,
        "worker": _text,
    },
    FRAME_SHELL_EXIT: {"code": _exit_code, "duration": _seconds},
    FRAME_EXIT: {
        "code": _exit_code_or_none,
        "killed": _flag,
        "lost": _lost,
        "duration": _seconds,
    },
    FRAME_SPAWN_FAILED: {"message": _text},
}


def _no_constants(name: str) -> None:
    raise ProtocolError(f"{name} in a report")


def signed_fields(kind: int, payload: bytes, key: bytes) -> dict[str, Any]:
    """The fields of a signed report, its signature verified and each field checked."""
    body, signature = payload[:-MAC_BYTES], payload[-MAC_BYTES:]
    if len(payload) <= MAC_BYTES or not hmac.compare_digest(signature, mac(key, kind, body)):
        raise ProtocolError(f"a report of kind {kind} with a wrong signature")
    try:
        fields = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise ProtocolError(f"a report of kind {kind} that is not JSON") from None
    expected = REPORT_FIELDS[kind]
    if not isinstance(fields, dict) or set(fields) != set(expected):
        raise ProtocolError(f"a report of kind {kind} with other fields than {sorted(expected)}")
    return {name: check(fields[name]) for name, check in expected.items()}


def _buffered(sock: socket.socket) -> bool:
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def job_frame(key: bytes, job: Mapping[str, Any]) -> bytes:
    """The signed frame that hands the supervisor its stage."""
    body = json.dumps(job, separators=(",", ":")).encode()
    return HEADER.pack(FRAME_JOB, len(body) + MAC_BYTES) + body + mac(key, FRAME_JOB, body)


# --- the door: admitting the stage's own task ------------------------------------------------


class WorkerKeys(Protocol):
    """The executor's keys, one per worker (see ``DaskExecutor``)."""

    def key(self, worker: str) -> bytes:
        """The worker's key (made on first use, never replaced)."""
        ...

    def hand(self, worker: str) -> concurrent.futures.Future[None]:
        """Hand the worker its key (Dask's direct connection to it); fails for a stranger.
        The future may be shared with other callers: never cancel it."""
        ...


class _Caller:
    """One connection at the door, part way through the handshake."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.received = b""
        self.worker = ""
        self.nonce = b""
        self.keying: concurrent.futures.Future[None] | None = None
        self.proving = False  # the worker has its key: the proof comes next


class Door:
    """A stage's callback port. It admits the first caller that proves, with its worker's key,
    to be the stage's task on a worker of the cluster; then it closes for good."""

    def __init__(
        self,
        keys: WorkerKeys,
        listener: socket.socket,
        session: bytes,
        stage: bytes,
        timeout: float,
    ) -> None:
        self.keys = keys
        self.listener = listener
        self.session = session
        self.stage = stage
        self.timeout = timeout
        self.callers: dict[int, _Caller] = {}
        listener.setblocking(False)
        # Readable once a key was handed over: its caller hears of it at once. The callback
        # runs in Dask's thread, so the pipe is closed under a lock.
        self.keyed_r, self.keyed_w = os.pipe()
        os.set_blocking(self.keyed_w, False)
        self.lock = threading.Lock()
        self.closed = False

    def watched(self) -> list[int]:
        """The descriptors to wait on: the port, the callers part way through, handed keys."""
        return [self.listener.fileno(), self.keyed_r, *self.callers]

    def step(self, ready: list[int]) -> Link | None:
        """Handle what is ready (and keys handed over meanwhile); the admitted link, if any."""
        now = time.monotonic()
        if self.keyed_r in ready:
            os.read(self.keyed_r, 512)
        if self.listener.fileno() in ready:
            self._accept(now)
        for fd, caller in list(self.callers.items()):
            try:
                link = self._advance(caller, fd in ready)
            except (OSError, ProtocolError):
                link = None
                self._drop(fd)
                continue
            if link is not None:
                del self.callers[fd]
                return link
            if now > caller.deadline:
                self._drop(fd)
        return None

    def close(self) -> None:
        """Turn away every caller still part way through."""
        for fd in list(self.callers):
            self._drop(fd)
        with self.lock:
            self.closed = True
            for fd in (self.keyed_r, self.keyed_w):
                os.close(fd)

    def _keyed(self, _: object) -> None:
        with self.lock, contextlib.suppress(OSError):
            if not self.closed:
                os.write(self.keyed_w, b"!")

    def _accept(self, now: float) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        tune_link(sock, self.timeout)
        if len(self.callers) >= MAX_CALLERS:
            self._drop(next(iter(self.callers)))
        # Handing a new worker its key is an RPC bounded by the link timeout: allow for it.
        self.callers[sock.fileno()] = _Caller(sock, now + 2 * self.timeout)

    def _drop(self, fd: int) -> None:
        self.callers.pop(fd).sock.close()

    def _advance(self, caller: _Caller, readable: bool) -> Link | None:
        if readable:
            chunk = caller.sock.recv(4096)
            if not chunk:
                raise ProtocolError("closed")
            caller.received += chunk
        if not caller.worker:
            self._hello(caller)
        if caller.keying is not None and caller.keying.done():
            if caller.keying.exception() is not None:  # not a worker, or it did not answer
                raise ProtocolError(f"no key for {caller.worker}: {caller.keying.exception()}")
            caller.keying = None
            caller.sock.send(KEYED)
            caller.proving = True
        if caller.proving and len(caller.received) >= PROOF_BYTES:
            return self._admit(caller)
        return None

    def _hello(self, caller: _Caller) -> None:
        head = len(HELLO) + HELLO_FIELDS.size
        if len(caller.received) < head:
            if not HELLO.startswith(caller.received[: len(HELLO)]):
                raise ProtocolError("not a stage's task")
            return
        if not caller.received.startswith(HELLO):
            raise ProtocolError("not a stage's task")
        session, stage, nonce, has_key, length = HELLO_FIELDS.unpack(
            caller.received[len(HELLO) : head]
        )
        if session != self.session or stage != self.stage or not 0 < length <= MAX_WORKER_ADDRESS:
            raise ProtocolError("another stage, or another orchestrator")
        if len(caller.received) < head + length:
            return
        worker = caller.received[head : head + length].decode("ascii", "replace")
        caller.received = caller.received[head + length :]
        caller.worker = _text(worker)
        caller.nonce = nonce
        if has_key:  # only this orchestrator gives keys of its session: the proof tells
            caller.proving = True
        else:
            caller.keying = self.keys.hand(worker)
            caller.keying.add_done_callback(self._keyed)

    def _admit(self, caller: _Caller) -> Link:
        key = self.keys.key(caller.worker)
        fields = (self.session, self.stage, caller.nonce)
        if not hmac.compare_digest(
            caller.received[:PROOF_BYTES], proof(key, *fields, caller.worker.encode())
        ):
            raise ProtocolError("a wrong proof")
        caller.sock.setblocking(True)
        caller.sock.settimeout(self.timeout)
        caller.sock.sendall(ACCEPTED)
        return Link(caller.sock, stage_key(key, *fields), caller.worker)


# --- following a started stage ---------------------------------------------------------------


class Remote(Protocol):
    """What following a stage needs of the executor."""

    address: str
    link_timeout: float

    def scheduler_alive(self) -> bool:
        """False once the client lost its scheduler."""
        ...

    def scheduler_lost(self) -> dict[str, Any]:
        """Outcome fields of a stage ended because the scheduler went away."""
        ...

    def reap_remote(self, worker: str, host: str, pgid: int, ticks: int, mark: str) -> str | None:
        """End what is left of a stage through its worker: ``ended``, ``none`` (found gone)
        or None (the worker could not be reached)."""
        ...


class Follower:
    """Follows one admitted stage: writes its output, enforces its timeout (counted from its
    submission) and cancellation, keeps the link alive, and records what is known when the
    link is lost."""

    def __init__(
        self,
        remote: Remote,
        link: Link,
        logs: LogFiles,
        request: StageRequest,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
        submitted: float,
        mark: str,
    ) -> None:
        self.remote = remote
        self.link = link
        self.logs = logs
        self.log_fds = {FRAME_STDOUT: logs.stdout, FRAME_STDERR: logs.stderr}
        self.cancellation = cancellation
        self.on_handle = on_handle
        self.mark = mark
        timeout = request.timeout_seconds
        # The client's half of the teardown: it decides when the supervisor is told to stop
        # the stage (TERMINATE, with what is left of the grace) and to kill it; the
        # supervisor applies the same rules to the processes (its copy of `Teardown`).
        self.teardown = Teardown(
            cancellation.grace_seconds,
            submitted,
            submitted + timeout if timeout else None,
            end_leftovers=False,
        )
        self.buffer = bytearray(RECEIVE_BYTES)
        self.kind = 0
        self.remaining = 0
        self.header = bytearray()
        self.meta = bytearray()
        self.outbox = bytearray()
        self.host = ""
        self.handle: dict[str, Any] | None = None
        self.started_at = time.time()
        self.started = time.monotonic()
        self.last_frame = self.last_sent = self.started
        self.report_due: float | None = None
        self.sent: set[int] = set()  # the teardown's signals already passed on
        self.scheduler_lost_at: float | None = None
        self.shell: dict[str, Any] | None = None
        self.report: dict[str, Any] | None = None
        self.broken: str | None = None
        self.silent = False

    def follow(self) -> StageOutcome:
        """Receive frames until the exit report, the link's end, or its silence."""
        sock = self.link.sock.fileno()
        self.link.sock.setblocking(False)
        wake = self.cancellation.wakeup_fd()
        hurry = self.cancellation.wakeup_fd(escalation=True)
        watched = [sock, wake, hurry]
        while self.report is None:
            writing = [sock] if self.outbox else []
            buffered = _buffered(self.link.sock)  # TLS may hold bytes the socket no longer shows
            ready, writable, _ = select.select(
                watched, writing, [], 0 if buffered else POLL_SECONDS
            )
            now = time.monotonic()
            if sock in ready or buffered:
                if not self._receive():
                    break
                self.last_frame = now
            elif now - self.last_frame > self.remote.link_timeout:
                self.broken = f"the link was silent for {self.remote.link_timeout:g} s"
                self.silent = True
                break
            if writable:
                self._flush()
            if self.report_due is not None and now > self.report_due:
                self.broken = "no exit report came in time"
                break
            for fd in (wake, hurry):
                if fd in ready and fd in watched:
                    watched.remove(fd)
            self._enforce(now)
            if now - self.last_sent >= KEEPALIVE_SECONDS:
                self._send(CONTROL.pack(CONTROL_ALIVE, 0.0))
            if len(self.outbox) > OUTBOX_LIMIT:
                self.broken = "the supervisor stopped reading"
                break
        return self._outcome()

    def _enforce(self, now: float) -> None:
        """Tell the supervisor to end the stage on timeout, cancellation or scheduler loss, as
        the teardown decides: TERMINATE once (with the grace left), KILL once."""
        teardown = self.teardown
        watching = not teardown.reason and self.shell is None and self.scheduler_lost_at is None
        if watching and not self.remote.scheduler_alive():
            self.scheduler_lost_at = now
        stops = [
            at for at in (self.cancellation.requested_at, self.scheduler_lost_at) if at is not None
        ]
        decision = teardown.decide(
            now,
            min(stops) if stops else None,
            self.cancellation.escalated,
            self.shell is not None,
            lambda: True,  # what the shell left is the supervisor's to see
        )
        if decision.signal in self.sent or teardown.kill_at is None:
            return
        if decision.signal == SIGTERM:
            self._send(CONTROL.pack(CONTROL_TERMINATE, max(0.0, teardown.kill_at - now)))
            if self.report_due is None:
                self.report_due = teardown.kill_at + KILL_WAIT_SECONDS + REPORT_MARGIN_SECONDS
        elif decision.signal == SIGKILL:
            self._send(CONTROL.pack(CONTROL_KILL, 0.0))
        self.sent.add(decision.signal)

    def _send(self, record: bytes) -> None:
        self.outbox += record
        self.last_sent = time.monotonic()
        self._flush()

    def _flush(self) -> None:
        try:
            sent = self.link.sock.send(self.outbox)
        except WOULD_BLOCK:
            return
        except OSError:
            sent = len(self.outbox)  # the link is gone: reading will tell
        del self.outbox[:sent]

    def _receive(self) -> bool:
        """Read what arrived and dispatch it; False at the end of the link or a bad frame."""
        try:
            count = self.link.sock.recv_into(self.buffer)
        except WOULD_BLOCK:
            return True
        except OSError:
            return False
        if count == 0:
            return False
        try:
            self._frames(memoryview(self.buffer)[:count])
        except ProtocolError as error:
            self.broken = f"it broke the protocol: {error}"
            return False
        return True

    def _frames(self, view: memoryview) -> None:
        while view:
            if self.remaining == 0 and len(self.header) < HEADER.size:
                take = HEADER.size - len(self.header)
                self.header += view[:take]
                view = view[take:]
                if len(self.header) < HEADER.size:
                    return
                self.kind, self.remaining = HEADER.unpack(self.header)
                self._check_header()
                if self.remaining == 0:
                    self._frame_done()
                    continue
            chunk = view[: self.remaining]
            view = view[len(chunk) :]
            self.remaining -= len(chunk)
            if self.kind in self.log_fds:
                write_all(self.log_fds[self.kind], chunk)
            else:
                self.meta += chunk
            if self.remaining == 0:
                self._frame_done()

    def _check_header(self) -> None:
        kind, length = self.kind, self.remaining
        if kind in self.log_fds:
            limit = CHUNK_BYTES
        elif kind in SIGNED_FRAMES:
            limit = REPORT_LIMIT
        elif kind == FRAME_ALIVE:
            limit = 0
        else:
            raise ProtocolError(f"a frame of unknown kind {kind}")
        if length > limit:
            raise ProtocolError(f"a frame of kind {kind} of {length} bytes")

    def _frame_done(self) -> None:
        kind, payload = self.kind, bytes(self.meta)
        self.header.clear()
        self.meta.clear()
        if kind not in SIGNED_FRAMES:
            return
        fields = signed_fields(kind, payload, self.link.key)
        if kind == FRAME_STARTED:
            self._started(fields)
        elif kind == FRAME_SHELL_EXIT:
            self.shell = fields
            self.report_due = time.monotonic() + self._leftover_bound()
        elif kind == FRAME_EXIT:
            self.report = fields
        else:
            raise OSError(fields["message"])

    def _leftover_bound(self) -> float:
        """How long a supervisor may take to end what a stage left, then report."""
        return self.cancellation.grace_seconds + KILL_WAIT_SECONDS + REPORT_MARGIN_SECONDS

    def _started(self, fields: dict[str, Any]) -> None:
        if self.handle is not None:
            raise ProtocolError("a second start report")
        self.host = fields["host"]
        self.started_at = time.time()
        self.started = time.monotonic()
        self.handle = {
            HANDLE_KIND: KIND,
            HANDLE_HOST: fields["host"],
            HANDLE_WORKER: self.link.worker,
            HANDLE_SCHEDULER: self.remote.address,
            HANDLE_WORKER_PID: fields["worker_pid"],
            HANDLE_PID: fields["pid"],
            HANDLE_PGID: fields["pid"],
            HANDLE_START_TICKS: fields["start_ticks"],
            HANDLE_STAGE_MARK: self.mark,
        }
        self.on_handle(self.handle)

    def _outcome(self) -> StageOutcome:
        timed_out = self.teardown.timed_out
        cancelled = self.cancellation.requested and not timed_out
        fields: dict[str, Any] = {"host": self.host, "timed_out": timed_out}
        if self.scheduler_lost_at is not None or (
            self.report is None and not self.remote.scheduler_alive()
        ):
            fields.update(self.remote.scheduler_lost())
        report = self.report
        if report is None:
            return self._lost_outcome(cancelled, fields)
        if report["lost"] is not None:
            fields.setdefault("lost", True)
            fields.setdefault("lost_reason", self._reported_loss(report["lost"]))
            self._record_end("reported")
        shell = self.shell or report
        return self.logs.outcome(
            shell["code"] if self.shell else report["code"],
            self.started_at,
            shell["duration"],
            cancelled=cancelled,
            killed=report["killed"],
            **fields,
        )

    def _reported_loss(self, why: str) -> str:
        where = f"on {self.host}" if self.host else f"of worker {self.link.worker}"
        return {
            LOST_WORKER: f"the Dask worker {self.link.worker} died; the stage's supervisor "
            f"{where} ended the stage",
            LOST_SIGNALLED: f"the stage's supervisor {where} was sent SIGTERM and ended the stage",
            LOST_ORCHESTRATOR: f"the stage's supervisor {where} lost its link to this "
            "orchestrator and ended the stage",
        }[why]

    def _lost_outcome(self, cancelled: bool, fields: dict[str, Any]) -> StageOutcome:
        """The supervisor vanished, fell silent or broke the protocol: say what is known of
        the stage's processes, after ending them through the worker when it can be reached."""
        with contextlib.suppress(OSError):
            self.link.sock.shutdown(socket.SHUT_RDWR)  # a supervisor still there ends the stage
        where = f"on {self.host}" if self.host else f"of worker {self.link.worker}"
        why = self.broken or "it vanished without an exit report"
        handle = self.handle or {}
        found = self.remote.reap_remote(
            self.link.worker,
            self.host,
            int(handle.get(HANDLE_PGID) or 0),
            int(handle.get(HANDLE_START_TICKS) or 0),
            self.mark,
        )
        may_still_run = found is None
        if found is not None:
            known = "its processes were ended through the worker"
            if found == "none":
                known = "none of its processes was left on the worker"
            self._record_end("reaped")
        elif self.silent:
            # A supervisor cut off from us ends the stage on its own within these bounds.
            bound = self.remote.link_timeout + self._leftover_bound()
            ends_by = time.time() + (self.last_frame + bound - time.monotonic())
            shown = time.strftime("%H:%M:%S", time.localtime(ends_by))
            known = (
                f"its processes may still run until {shown} (their supervisor ends them by "
                "then if it is alive; the worker could not be reached to check)"
            )
            self._record_end("due", ends_by)
        else:
            known = "whether its processes still run could not be checked (worker unreachable)"
            self._record_end("unknown")
        fields.setdefault("lost", True)
        fields.setdefault("lost_reason", f"the stage's supervisor {where}: {why}; {known}")
        fields["may_still_run"] = may_still_run
        shell = self.shell or {}
        return self.logs.outcome(
            shell.get("code"),
            self.started_at,
            shell.get("duration", time.monotonic() - self.started),
            cancelled=cancelled,
            **fields,
        )

    def _record_end(self, end: str, ends_by: float | None = None) -> None:
        """Record in the stage's handle what is known of its processes' end."""
        if self.handle is None:
            return
        update: dict[str, Any] = {HANDLE_REMOTE_END: end}
        if ends_by is not None:
            update[HANDLE_REMOTE_ENDS_BY] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(ends_by))
            )
        self.handle = {**self.handle, **update}
        self.on_handle(self.handle)
