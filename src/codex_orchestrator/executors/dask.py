"""The Dask executor: each command stage runs as one Dask task on a worker of a cluster.

The task (``dask_remote.run_stage_on_worker``, sent as source text) connects back to a socket
this executor opens for the stage, and has the worker's fork server (``dask_supervisor``) start
a supervisor that runs the command in its own process group and streams its output over that
socket into the run's log files here, while the stage runs. No shared filesystem is needed, and
memory stays bounded on both sides (one chunk in flight per stream). Cancellation, timeouts and
worker loss are handled over the same socket. This module is the only one that imports Dask,
and only when the user chose this executor. See docs/executors.md."""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.errors import EXIT_USAGE, OrchestratorError
from codex_orchestrator.executor import Cancellation, Handle, StageOutcome, StageRequest
from codex_orchestrator.executors import dask_entry, dask_remote, dask_supervisor
from codex_orchestrator.executors.dask_supervisor import (
    CONTROL,
    CONTROL_KILL,
    CONTROL_TERMINATE,
    FRAME_ALIVE,
    FRAME_EXIT,
    FRAME_SPAWN_FAILED,
    FRAME_STARTED,
    FRAME_STDERR,
    FRAME_STDOUT,
    HEADER,
)
from codex_orchestrator.local_executor import LocalExecutor
from codex_orchestrator.local_executor import _open_log as open_log
from codex_orchestrator.local_executor import _tail as read_tail
from codex_orchestrator.output import note
from codex_orchestrator.procfs import checked_pid
from codex_orchestrator.statuses import StageFailure

KIND = "dask"
INSTALL_HINT = (
    "pip install 'codex-pipeline-orchestrator[dask]' (installed with pipx: "
    "pipx inject codex-pipeline-orchestrator 'dask[distributed]>=2024.1')"
)
ADDRESS_PATTERN = re.compile(
    r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})"
)
CONNECT_TIMEOUT_SECONDS = 10.0
#: The start of a Dask scheduler's handshake frame: bytes after this count, number of frames,
#: length of the first frame (distributed/comm/tcp.py, native byte order as there).
GREETING = struct.Struct("=3Q")
GREETING_TIMEOUT_SECONDS = 5.0
GREETING_MAX_FRAMES = 1024
GREETING_LIMIT = 1 << 20
POLL_SECONDS = 0.1
RECEIVE_BYTES = 1 << 20
#: Largest metadata frame (started/exit/spawn-failed); data frames stream straight to disk.
META_LIMIT = 64 * 1024
#: After asking the supervisor to stop, how long beyond the grace period to wait for its report.
REPORT_MARGIN_SECONDS = 5.0


class _SchedulerLost(Exception):
    """The Dask scheduler went away while the stage was queued."""


class WorkerMapping(NamedTuple):
    """Where the repository lives here (``local``) and on the workers (``remote``)."""

    local: Path
    remote: Path

    def worker_path(self, path: Path) -> Path:
        """``path`` (under the local root) as the workers see it."""
        try:
            return self.remote / path.relative_to(self.local)
        except ValueError:
            return path


def parse_address(address: str, source: str) -> tuple[str, int]:
    """Host and port of a ``tcp://HOST:PORT`` scheduler address, else exit 2 with the fix."""
    match = ADDRESS_PATTERN.fullmatch(address.strip())
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise OrchestratorError(
            f"{source}: {address!r} is not a Dask scheduler address; give tcp://HOST:PORT "
            "(e.g. tcp://127.0.0.1:8786, as printed by 'dask scheduler')",
            exit_code=EXIT_USAGE,
        )
    return match["host"].strip("[]"), port


def connect(
    address: str,
    source: str,
    mapping: WorkerMapping,
    grace_seconds: float,
    lost_after_seconds: float,
) -> DaskExecutor:
    """Connect to the scheduler at ``address`` (named by ``source``), else exit 2 with the fix."""
    callback_host = check_scheduler(address, source)
    return _client_executor(
        address, source, callback_host, mapping, grace_seconds, lost_after_seconds
    )


def connect_after_fork(
    address: str,
    source: str,
    mapping: WorkerMapping,
    grace_seconds: float,
    lost_after_seconds: float,
) -> DetachedDaskExecutor:
    """Check the scheduler at ``address`` as `connect` does, without importing Dask (else exit
    2 with the fix); the executor connects in the detached process (`DetachedDaskExecutor`)."""
    check_scheduler(address, source)
    return DetachedDaskExecutor(
        partial(connect, address, source, mapping, grace_seconds, lost_after_seconds), address
    )


def check_scheduler(address: str, source: str) -> str:
    """Check, without importing Dask, that the extra is installed and that ``address`` is a
    Dask scheduler that answers; else exit 2 with the fix. Returns this machine's address on
    the route to it (workers connect back to that address).

    A detached run validates this before it forks and connects after the fork: a Dask client's
    threads do not survive a fork, so Dask must not even be imported before it.
    """
    host, port = parse_address(address, source)
    missing = [name for name in ("distributed", "cloudpickle") if find_spec(name) is None]
    if missing:
        raise OrchestratorError(
            f"the dask executor needs Dask's distributed scheduler (not installed: "
            f"{', '.join(missing)}); install it with {INSTALL_HINT}",
            exit_code=EXIT_USAGE,
        )
    return _probe(host, port, address, source)


def _client_executor(
    address: str,
    source: str,
    callback_host: str,
    mapping: WorkerMapping,
    grace_seconds: float,
    lost_after_seconds: float,
) -> DaskExecutor:
    """Import Dask and connect a client to the checked scheduler at ``address``."""
    import cloudpickle  # type: ignore[import-untyped]
    import distributed

    host, port = parse_address(address, source)
    try:
        client = distributed.Client(  # type: ignore[no-untyped-call]
            f"tcp://{host}:{port}" if ":" not in host else f"tcp://[{host}]:{port}",
            timeout=CONNECT_TIMEOUT_SECONDS,
            set_as_default=False,
        )
    except (OSError, ValueError) as error:
        raise OrchestratorError(
            f"{source}: cannot connect to the Dask scheduler at {address} ({error}); start one "
            "with 'dask scheduler' or fix the address",
            exit_code=EXIT_USAGE,
        ) from None
    # Workers need Python and Dask only: the entry function travels by value, the worker-side
    # modules as source text.
    cloudpickle.register_pickle_by_value(dask_entry)
    return DaskExecutor(client, address, callback_host, mapping, grace_seconds, lost_after_seconds)


def _probe(host: str, port: int, address: str, source: str) -> str:
    """Check the scheduler's port answers like a Dask scheduler; return this machine's address
    on that route, the one the scheduler sees us from.

    A Dask scheduler writes its side of the comm handshake as soon as it accepts a connection
    (distributed's ``Listener.on_connection``): a frame whose header is three native 64-bit
    counts (the bytes that follow the first count, the number of frames, the first frame's
    length). A web server (the dashboard on 8787) waits for a request; other services greet
    with text. Either is refused here rather than left to a client that waits 10 s.
    """
    try:
        probe = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS)
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise OrchestratorError(
            f"{source}: cannot reach the Dask scheduler at {address} ({reason}); start one "
            "with 'dask scheduler' on that host, or fix the address",
            exit_code=EXIT_USAGE,
        ) from None
    with probe:
        local: str = probe.getsockname()[0]
        problem = _greeting_problem(probe)
    if problem is not None:
        raise OrchestratorError(
            f"{source}: {address} is not a Dask scheduler ({problem}); give the address "
            "'dask scheduler' prints (tcp://HOST:8786 by default; 8787 is its dashboard)",
            exit_code=EXIT_USAGE,
        )
    return local


def _greeting_problem(probe: socket.socket) -> str | None:
    """None when the first bytes read from ``probe`` are a Dask frame header, else why not."""
    probe.settimeout(GREETING_TIMEOUT_SECONDS)
    received, silence = b"", "it closed the connection without a word"
    try:
        while len(received) < GREETING.size:
            chunk = probe.recv(GREETING.size - len(received))
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        silence = f"it said nothing within {GREETING_TIMEOUT_SECONDS:g} s of the connection"
    except OSError as error:
        return f"reading its greeting failed: {error.strerror or error}"
    if not received:
        return silence
    if len(received) == GREETING.size:
        total, frames, first = GREETING.unpack(received)
        prelude = 8 * (frames + 1)
        if 0 < frames <= GREETING_MAX_FRAMES and prelude + first <= total <= GREETING_LIMIT:
            return None
    return f"its first bytes are not a Dask frame header: {received!r}"


class DaskExecutor:
    """Runs stages as Dask tasks; `run` may be called from several threads at once."""

    name = KIND

    def __init__(
        self,
        client: Any,
        address: str,
        callback_host: str,
        mapping: WorkerMapping,
        grace_seconds: float,
        lost_after_seconds: float,
    ) -> None:
        self.client = client
        self.address = address
        self.options = {"scheduler": address}
        self.callback_host = callback_host
        self.mapping = mapping
        self.grace_seconds = grace_seconds
        self.lost_after_seconds = lost_after_seconds
        #: Handles of stages whose supervisor vanished without a report (their group may live).
        self.orphans: list[Handle] = []
        #: The future of the stage submitted last, kept until the next submit (see `_run`).
        self.last_submitted: Any = None
        self.remote_source = Path(dask_remote.__file__).read_text(encoding="utf-8")
        self.supervisor_source = Path(dask_supervisor.__file__).read_text(encoding="utf-8")

    def run(
        self,
        request: StageRequest,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> StageOutcome:
        """Run ``request`` on a worker; its output lands in the request's log files here."""
        with _LogFiles(request) as logs:
            return self._run(request, logs, cancellation, on_handle)

    def _run(
        self,
        request: StageRequest,
        logs: _LogFiles,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> StageOutcome:
        if request.resources:
            self._warn_unmet(request.stage_id, request.resources)
        family = socket.AF_INET6 if ":" in self.callback_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as listener:
            listener.bind((self.callback_host, 0))
            listener.listen(8)
            token = os.urandom(16).hex().encode()
            future = self.client.submit(
                dask_entry.call,
                self.remote_source,
                "run_stage_on_worker",
                listener.getsockname()[:2],
                token,
                self.supervisor_source,
                request.command,
                str(self.mapping.worker_path(request.cwd)),
                dict(request.env),
                self.grace_seconds,
                key=f"codex-stage-{request.stage_id}-{token[:12].decode()}",
                pure=False,
                retries=0,
                resources=dict(request.resources) if request.resources else None,
            )
            # Dropping a future sends "release" at once, and the client then holds its next
            # send for its batching interval (10 ms): the release of a stage that just ended
            # would delay the very next submit. Replaced here, after a submit, it travels in
            # the same batch instead.
            self.last_submitted = future
            try:
                channel = self._await_start(listener, token, future, cancellation)
            except _SchedulerLost:
                return logs.outcome(None, time.time(), 0.0, host="", **self.scheduler_lost())
            except BaseException:
                future.cancel()
                raise
        if channel is None:  # cancelled while queued: nothing ever ran
            future.cancel()
            return logs.outcome(None, time.time(), 0.0, cancelled=True, host="")
        with channel:
            stream = _Stream(self, channel, logs, request, cancellation, on_handle)
            return stream.follow()

    def _warn_unmet(self, stage_id: str, resources: Mapping[str, float]) -> None:
        """Say so when no worker has the resources a stage needs: Dask then waits for one."""
        workers = self.client.scheduler_info().get("workers", {}).values()
        if not any(
            all(
                worker.get("resources", {}).get(name, 0) >= amount
                for name, amount in resources.items()
            )
            for worker in workers
        ):
            wanted = ", ".join(f"{name}={amount:g}" for name, amount in resources.items())
            note(
                f"warning: stage {stage_id}: no Dask worker has {wanted} yet; it waits for one "
                f'(start one with: dask worker {self.address} --resources "{wanted}")'
            )

    def _await_start(
        self, listener: socket.socket, token: bytes, future: Any, cancellation: Cancellation
    ) -> socket.socket | None:
        """Wait until the task connects back with ``token``; None if cancelled before that."""
        wake = cancellation.wakeup_fd()
        while True:
            ready, _, _ = select.select([listener.fileno(), wake], [], [], POLL_SECONDS)
            if cancellation.requested:
                return None
            if listener.fileno() in ready:
                channel = _admit(listener, token)
                if channel is not None:
                    return channel
            self._check_queued(future)

    def scheduler_lost(self) -> dict[str, Any]:
        """Outcome fields of a stage ended because the scheduler went away."""
        return {
            "lost": True,
            "lost_failure": StageFailure.SCHEDULER_LOST,
            "lost_reason": f"the Dask scheduler at {self.address} went away",
        }

    def scheduler_alive(self) -> bool:
        """False once the client lost its scheduler (it then only tries to reconnect)."""
        return bool(self.client.status == "running")

    def _check_queued(self, future: Any) -> None:
        """Raise when the task can no longer start: scheduler gone, or the task failed."""
        if not self.scheduler_alive():
            raise _SchedulerLost
        if future.status == "error":
            error = future.exception()
            raise OSError(f"the Dask task failed on the worker: {type(error).__name__}: {error}")
        if future.status in ("finished", "cancelled", "lost"):
            result = future.result() if future.status == "finished" else future.status
            raise OSError(f"the Dask task ended without running the stage ({result})")

    def reap(self, handle: Handle, grace_seconds: float) -> bool:
        """End a dead run's stage group on its worker, if that worker is still in the cluster.

        A stage whose worker is gone died with it (parent-death signal); a stage whose
        orchestrator died ended when its socket closed. This is the last line of defence.
        A local stage's handle (a local run resumed on Dask) goes to the local executor.
        """
        if handle.get("kind") == LocalExecutor.name:
            return LocalExecutor(grace_seconds).reap(handle, grace_seconds)
        if handle.get("kind") != KIND:
            return False
        pgid, ticks = checked_pid(handle.get("pgid")), handle.get("start_ticks")
        worker, host = handle.get("worker"), handle.get("host")
        if (
            pgid is None
            or isinstance(ticks, bool)
            or not isinstance(ticks, int)
            or not isinstance(worker, str)
            or not isinstance(host, str)
        ):
            note(f"warning: not ending recorded remote stage {dict(handle)!r}: malformed handle")
            return False
        if worker not in self.client.scheduler_info().get("workers", {}):
            return False
        future = self.client.submit(
            dask_entry.call,
            self.remote_source,
            "reap_on_worker",
            self.supervisor_source,
            host,
            pgid,
            ticks,
            grace_seconds,
            workers=[worker],
            allow_other_workers=False,
            pure=False,
        )
        try:
            return bool(future.result(timeout=grace_seconds + CONNECT_TIMEOUT_SECONDS))
        except Exception as error:  # Dask raises its own kinds; none may stop a resume
            note(f"warning: could not end process group {pgid} on {worker}: {error}")
            return False

    def close(self) -> None:
        """End groups whose supervisor vanished, then disconnect from the scheduler.

        Every other stage's group ended with its supervisor (shell exit, orchestrator gone,
        worker gone).
        """
        if self.scheduler_alive():
            for handle in self.orphans:
                self.reap(handle, self.grace_seconds)
        self.orphans.clear()
        self.last_submitted = None
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            self.client.close(timeout=CONNECT_TIMEOUT_SECONDS)


class DetachedDaskExecutor:
    """The Dask executor of a detached run: checked before the fork, connected after it.

    `check_scheduler` ran in the caller, before the run was created. `connect` runs in the
    detached process, before its first stage (a Dask client's threads would not survive the
    fork); it checks again, so a scheduler gone in between is seen at once, not after the
    client's 10 s of retries. Handles given to `reap` before then (``resume --detach`` ends
    what the dead run left, before it forks) are reaped once connected, still before any stage
    starts. When the connection fails after all, every stage fails at once as
    ``scheduler-lost``, with the reason in the orchestrator's log: the run ends ``failed``, it
    never hangs.
    """

    name = KIND

    def __init__(self, connect: Callable[[], DaskExecutor], address: str) -> None:
        """``connect``: builds the connected executor (exit-2 errors say what is wrong)."""
        self.address = address
        self.options = {"scheduler": address}
        self._connect = connect
        self._lock = threading.Lock()
        self._connected: DaskExecutor | None = None
        self._failure: str | None = None
        self._reaps: list[tuple[Handle, float]] = []

    def connected(self) -> DaskExecutor | None:
        """The connected executor (connecting on the first call), or None if that failed."""
        with self._lock:
            if self._connected is None and self._failure is None:
                try:
                    self._connected = self._connect()
                except Exception as error:  # whatever it is, the detached run must end honestly
                    self._failure = (
                        str(error)
                        if isinstance(error, OrchestratorError)
                        else f"cannot connect to the Dask scheduler at {self.address} "
                        f"({type(error).__name__}: {error})"
                    )
                    note(f"error: {self._failure}")
                else:
                    for handle, grace in self._reaps:
                        self._connected.reap(handle, grace)
                self._reaps.clear()
            return self._connected

    def run(
        self,
        request: StageRequest,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> StageOutcome:
        """Run ``request`` on a worker once connected; a failed connection loses the stage."""
        executor = self.connected()
        if executor is not None:
            return executor.run(request, cancellation, on_handle)
        with _LogFiles(request) as logs:
            return logs.outcome(
                None,
                time.time(),
                0.0,
                host="",
                lost=True,
                lost_failure=StageFailure.SCHEDULER_LOST,
                lost_reason=f"the detached run could not connect: {self._failure}",
            )

    def reap(self, handle: Handle, grace_seconds: float) -> bool:
        """Reap a local stage's handle now; a remote one once connected (after the fork)."""
        if self._connected is not None:
            return self._connected.reap(handle, grace_seconds)
        if handle.get("kind") == LocalExecutor.name:
            return LocalExecutor(grace_seconds).reap(handle, grace_seconds)
        if handle.get("kind") == KIND:
            self._reaps.append((handle, grace_seconds))
        return False

    def close(self) -> None:
        """Disconnect; remote handles still waiting to be reaped are reaped first."""
        executor = self.connected() if self._reaps else self._connected
        if executor is not None:
            executor.close()


def _admit(listener: socket.socket, token: bytes) -> socket.socket | None:
    """Accept one connection; keep it only if it carries ``token`` (then say go)."""
    channel, _ = listener.accept()
    try:
        channel.settimeout(CONNECT_TIMEOUT_SECONDS)
        hello = dask_remote.HELLO + token
        received = b""
        while len(received) < len(hello):
            chunk = channel.recv(len(hello) - len(received))
            if not chunk:
                break
            received += chunk
        if hmac.compare_digest(received, hello):
            channel.sendall(dask_remote.GO)
            channel.setblocking(True)
            return channel
    except OSError:
        pass
    channel.close()
    return None


class _LogFiles:
    """The stage's two log files, open for the whole stage; tails are read back from them."""

    def __init__(self, request: StageRequest) -> None:
        self.paths = (request.stdout_path, request.stderr_path)
        self.fds: dict[int, int] = {}

    def __enter__(self) -> _LogFiles:
        for kind, path in zip((FRAME_STDOUT, FRAME_STDERR), self.paths, strict=True):
            self.fds[kind] = open_log(path)
        return self

    def __exit__(self, *_: object) -> None:
        for fd in self.fds.values():
            os.close(fd)

    def write(self, kind: int, data: memoryview) -> None:
        """Append ``data`` to the log of stream ``kind``."""
        fd = self.fds[kind]
        while data:
            data = data[os.write(fd, data) :]

    def outcome(
        self, exit_code: int | None, started_at: float, duration: float, **fields: Any
    ) -> StageOutcome:
        """The stage's outcome, with tails and sizes read back from the log files.

        ``fields``: ``host`` and any of the outcome's flags and lost-stage fields.
        """
        stdout_tail, stdout_bytes = read_tail(self.fds[FRAME_STDOUT])
        stderr_tail, stderr_bytes = read_tail(self.fds[FRAME_STDERR])
        flags = dict.fromkeys(("timed_out", "cancelled", "killed", "lost"), False)
        return StageOutcome(
            exit_code=exit_code,
            started_at=started_at,
            duration_seconds=duration,
            stdout_tail=stdout_tail,
            stderr_tail=stderr_tail,
            stdout_bytes=stdout_bytes,
            stderr_bytes=stderr_bytes,
            **{**flags, **fields},
        )


class _Stream:
    """Follows one started stage: writes its output, enforces timeout and cancellation."""

    def __init__(
        self,
        executor: DaskExecutor,
        channel: socket.socket,
        logs: _LogFiles,
        request: StageRequest,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> None:
        self.executor = executor
        self.channel = channel
        self.logs = logs
        self.request = request
        self.cancellation = cancellation
        self.on_handle = on_handle
        self.buffer = bytearray(RECEIVE_BYTES)
        self.kind = 0
        self.remaining = 0
        self.header = bytearray()
        self.meta = bytearray()
        self.host = ""
        self.handle: Handle | None = None
        self.started_at = time.time()
        self.started = time.monotonic()
        self.last_frame = self.started
        self.report_due: float | None = None
        self.kill_sent = False
        self.timed_out = False
        self.scheduler_lost = False
        self.report: bytes | None = None

    def follow(self) -> StageOutcome:
        """Receive frames until the supervisor's exit report, the socket's end, or silence."""
        wake = self.cancellation.wakeup_fd()
        hurry = self.cancellation.wakeup_fd(escalation=True)
        watched = [self.channel.fileno(), wake, hurry]
        while self.report is None:
            ready, _, _ = select.select(watched, [], [], POLL_SECONDS)
            now = time.monotonic()
            if watched[0] in ready:
                if not self._receive():
                    break  # the supervisor vanished without a report
                self.last_frame = now
            elif now - self.last_frame > self.executor.lost_after_seconds:
                break  # no output and no keep-alive: the supervisor or its link is gone
            if self.report_due is not None and now > self.report_due:
                break  # told to stop, yet no report long after the grace period
            if wake in ready:
                watched.remove(wake)
            if hurry in ready:
                watched.remove(hurry)
            self._enforce(now)
        return self._outcome()

    def _enforce(self, now: float) -> None:
        """Ask the supervisor to end the group on timeout, cancellation or scheduler loss."""
        timeout = self.request.timeout_seconds
        if self.report_due is None:
            if timeout is not None and now - self.started >= timeout:
                self.timed_out = True
            elif not self.executor.scheduler_alive():
                self.scheduler_lost = True
            elif not self.cancellation.requested:
                return
            grace = self.cancellation.grace_seconds
            if self.cancellation.requested:
                grace = max(0.0, self.cancellation.requested_at + grace - now)
            self._control(CONTROL_TERMINATE, grace)
            self.report_due = now + grace + REPORT_MARGIN_SECONDS
        if self.cancellation.escalated and not self.kill_sent:
            self._control(CONTROL_KILL, 0.0)
            self.kill_sent = True

    def _control(self, kind: int, grace: float) -> None:
        with contextlib.suppress(OSError):
            self.channel.sendall(CONTROL.pack(kind, grace))

    def _receive(self) -> bool:
        """Read what arrived and dispatch it; False at end of stream."""
        try:
            count = self.channel.recv_into(self.buffer)
        except OSError:
            return False
        if count == 0:
            return False
        view = memoryview(self.buffer)[:count]
        while view:
            if self.remaining == 0 and len(self.header) < HEADER.size:
                take = HEADER.size - len(self.header)
                self.header += view[:take]
                view = view[take:]
                if len(self.header) < HEADER.size:
                    break
                self.kind, self.remaining = HEADER.unpack(self.header)
                if self.kind not in self.logs.fds and self.remaining > META_LIMIT:
                    return False  # not our protocol: treat the stage as lost
            chunk = view[: self.remaining]
            view = view[len(chunk) :]
            self.remaining -= len(chunk)
            if self.kind in self.logs.fds:
                self.logs.write(self.kind, chunk)
            else:
                self.meta += chunk
            if self.remaining == 0:
                self._frame_done()
        return True

    def _frame_done(self) -> None:
        kind, payload = self.kind, bytes(self.meta)
        self.header.clear()
        self.meta.clear()
        if kind == FRAME_STARTED:
            self._started(payload)
        elif kind == FRAME_EXIT:
            self.report = payload
        elif kind == FRAME_SPAWN_FAILED:
            raise OSError(payload.decode("utf-8", "replace"))
        elif kind != FRAME_ALIVE and kind not in self.logs.fds:
            raise OSError(f"unexpected frame {kind} from the stage's supervisor")

    def _started(self, payload: bytes) -> None:
        pid, ticks, worker_pid, host, *worker = payload.decode("utf-8", "replace").split(" ")
        self.host = host
        self.started_at = time.time()
        self.started = time.monotonic()
        self.handle = {
            "kind": KIND,
            "host": host,
            "worker": worker[0] if worker else "",
            "scheduler": self.executor.address,
            "worker_pid": int(worker_pid),
            "pid": int(pid),
            "pgid": int(pid),
            "start_ticks": int(ticks),
        }
        self.on_handle(self.handle)

    def _outcome(self) -> StageOutcome:
        cancelled = self.cancellation.requested and not self.timed_out
        fields: dict[str, Any] = {"host": self.host, "timed_out": self.timed_out}
        if self.scheduler_lost or (self.report is None and not self.executor.scheduler_alive()):
            fields.update(self.executor.scheduler_lost())
        if self.report is None:  # the supervisor vanished or fell silent: its worker is lost
            if self.handle is not None and not self.scheduler_lost:
                self.executor.orphans.append(self.handle)
            fields.setdefault("lost", True)
            duration = time.monotonic() - self.started
            return self.logs.outcome(None, self.started_at, duration, cancelled=cancelled, **fields)
        code, killed, lost, duration_text = self.report.decode().split(" ")
        fields.setdefault("lost", lost == "1")
        return self.logs.outcome(
            int(code),
            self.started_at,
            float(duration_text),
            cancelled=cancelled,
            killed=killed == "1",
            **fields,
        )
