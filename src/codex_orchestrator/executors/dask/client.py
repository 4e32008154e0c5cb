"""The Dask executor: each command stage runs as one Dask task on a worker of a cluster.

The task (``worker.remote.run_stage_on_worker``, sent as source text) connects back to a port
this executor opens for the stage, proves it runs on a worker of the cluster, and has the
worker's fork server (``dask_supervisor``) start a supervisor, which receives the stage over
that connection, runs it in its own session and streams its output into the run's log files
here while it runs (``dask_link``). No shared filesystem is needed, and memory stays bounded on
both sides. The task spec, which any client of the scheduler can read, carries no command, no
variable and no secret. Every call to the scheduler has a deadline. This module is the only
one that builds a Dask client, and only when the user chose this executor. See
docs/executors.md."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.executors.base import (
    HANDLE_HOST,
    HANDLE_KIND,
    HANDLE_PGID,
    HANDLE_REMOTE_END,
    HANDLE_REMOTE_ENDS_BY,
    HANDLE_STAGE_MARK,
    HANDLE_START_TICKS,
    HANDLE_WORKER,
    Cancellation,
    Handle,
    StageOutcome,
    StageRequest,
    recorded_start_ticks,
)
from codex_orchestrator.executors.dask.connect import (
    ConnectCancelled,
    TlsFiles,
    check_scheduler,
    open_client,
)
from codex_orchestrator.executors.dask.link import (
    KIND,
    REPORT_MARGIN_SECONDS,
    Door,
    Follower,
    Link,
    job_frame,
)
from codex_orchestrator.executors.dask.worker import entry as dask_entry
from codex_orchestrator.executors.dask.worker import remote as dask_remote
from codex_orchestrator.executors.dask.worker import supervisor as dask_supervisor
from codex_orchestrator.executors.dask.worker.remote import KEYS_ATTRIBUTE as KEYS
from codex_orchestrator.executors.dask.worker.supervisor import (
    KILL_WAIT_SECONDS,
    PYTHON_ENV,
    STAGE_MARK_ENV,
)
from codex_orchestrator.executors.logfiles import LogFiles
from codex_orchestrator.records.statuses import StageFailure
from codex_orchestrator.util.console import note
from codex_orchestrator.util.procfs import checked_pid

POLL_SECONDS = 0.1
#: The run's variables that name paths of the repository: mapped to the workers' view of it.
MAPPED_PATHS = (
    "CODEX_ORCHESTRATOR_ROOT",
    "CODEX_ORCHESTRATOR_RUN_DIR",
    "CODEX_ORCHESTRATOR_MANIFEST_PATH",
)
#: A stage still queued this long has the scheduler checked, and again every half link timeout.
PING_AFTER_SECONDS = 1.0


class _SchedulerLost(Exception):
    """The Dask scheduler went away, or stopped answering, while the stage was queued."""


class _QueuedTooLong(Exception):
    """The stage's timeout passed while it was still queued."""


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


class DaskConfig(NamedTuple):
    """What the Dask executor is told: the scheduler, and how to treat stages."""

    address: str
    source: str  # where the address came from, for messages
    mapping: WorkerMapping
    grace_seconds: float
    link_timeout: float
    connect_timeout: float
    pass_env: tuple[str, ...] = ()
    tls: TlsFiles | None = None


def connect(config: DaskConfig, cancellation: Cancellation | None = None) -> DaskExecutor:
    """Connect to the configured scheduler, else exit 2 with the fix (one line); raises
    `ConnectCancelled` when ``cancellation`` is requested meanwhile."""
    deadline = time.monotonic() + config.connect_timeout
    endpoint, callback_host = check_scheduler(config.address, config.source, config.tls, deadline)
    client = open_client(
        endpoint, config.address, config.source, config.tls, deadline, cancellation
    )
    import cloudpickle  # type: ignore[import-untyped]

    # Workers need Python and Dask only: the entry functions travel by value, the worker-side
    # modules as source text.
    cloudpickle.register_pickle_by_value(dask_entry)
    return DaskExecutor(client, config, callback_host)


def connect_after_fork(config: DaskConfig) -> DetachedDaskExecutor:
    """Check the scheduler as `connect` does, without importing Dask (else exit 2 with the
    fix); the executor connects in the detached process (`DetachedDaskExecutor`)."""
    check_scheduler(
        config.address, config.source, config.tls, time.monotonic() + config.connect_timeout
    )
    return DetachedDaskExecutor(partial(connect, config), config.address)


class DaskExecutor:
    """Runs stages as Dask tasks; `run` may be called from several threads at once."""

    name = KIND

    def __init__(self, client: Any, config: DaskConfig, callback_host: str) -> None:
        self.client = client
        self.config = config
        self.address = config.address
        self.options = {"scheduler": config.address}
        self.callback_host = callback_host
        self.grace_seconds = config.grace_seconds
        self.link_timeout = config.link_timeout
        #: This orchestrator's id on the workers: they keep its key under it.
        self.session = os.urandom(16)
        self._keys: dict[str, bytes] = {}
        self._handing: dict[str, concurrent.futures.Future[None]] = {}
        self._keys_lock = threading.Lock()
        #: Handles of stages lost without their end verified: checked again on `close`.
        self.orphans: list[Handle] = []
        #: The future of the stage submitted last, kept until the next submit (see `_run`).
        self.last_submitted: Any = None
        #: In a TLS cluster, each stage's link is TLS too (after the handshake, before the job).
        self.link_tls = config.tls.server_context() if config.tls is not None else None
        self.remote_source = Path(dask_remote.__file__).read_text(encoding="utf-8")
        self.supervisor_source = Path(dask_supervisor.__file__).read_text(encoding="utf-8")
        self._call(self._hand_every_key())

    # --- the workers' keys (see ``dask_link.WorkerKeys``) ------------------------------------

    def key(self, worker: str) -> bytes:
        """The key of ``worker``: made on first use, never replaced."""
        with self._keys_lock:
            return self._keys.setdefault(worker, os.urandom(32))

    def hand(self, worker: str) -> concurrent.futures.Future[None]:
        """Hand ``worker`` its key over Dask's direct connection to it (never through the
        scheduler), once the scheduler confirms it is a worker of the cluster. Callers share
        one handing-over per worker; one that failed is tried again."""
        key = self.key(worker)
        with self._keys_lock:
            handing = self._handing.get(worker)
            if handing is None or (
                handing.done() and (handing.cancelled() or handing.exception() is not None)
            ):
                handing = self._handing[worker] = self._call(self._hand_key(worker, key))
            return handing

    async def _hand_key(self, worker: str, key: bytes) -> None:
        identity = await self.client.scheduler.identity(n_workers=-1)
        if worker not in identity.get("workers", {}):
            raise ValueError(f"{worker} is not a worker of this cluster")
        await self._worker_call(worker, dask_entry.remember, (KEYS, self.session, key))

    async def _hand_every_key(self) -> None:
        """Hand each worker of the cluster its key now, in the background: a session's first
        stage on a worker then finds its key there instead of waiting for it."""
        identity = await self.client.scheduler.identity(n_workers=-1)
        for worker in identity.get("workers", {}):
            self.hand(worker)

    async def _worker_call(self, worker: str, function: Any, args: tuple[Any, ...]) -> Any:
        """Call ``function`` (of ``dask_entry``) on ``worker`` over Dask's direct connection to
        it: neither through the scheduler nor in one of the worker's task threads."""
        from distributed.protocol.pickle import dumps

        reply = await self.client.rpc(worker).run(
            function=dumps(function),  # type: ignore[no-untyped-call]
            args=dumps(args),  # type: ignore[no-untyped-call]
            wait=True,
        )
        if not isinstance(reply, dict) or reply.get("status") != "OK":
            raise ValueError(f"{worker} refused the call: {reply!r:.200}")
        return reply["result"]

    # --- calls to the scheduler, each with a deadline ----------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.client.loop.asyncio_loop)

    def _workers(self, cancellation: Cancellation | None = None) -> dict[str, Any]:
        """The scheduler's workers, by the link timeout, else `_SchedulerLost`."""
        future = self._call(self.client.scheduler.identity(n_workers=-1))
        deadline = time.monotonic() + self.link_timeout
        while True:
            try:
                workers: dict[str, Any] = future.result(timeout=POLL_SECONDS).get("workers", {})
                return workers
            except concurrent.futures.TimeoutError:
                if time.monotonic() > deadline or (cancellation and cancellation.requested):
                    future.cancel()
                    raise _SchedulerLost from None
            except Exception:  # Dask raises its own kinds when the scheduler is gone
                raise _SchedulerLost from None

    def scheduler_lost(self) -> dict[str, Any]:
        """Outcome fields of a stage ended because the scheduler went away."""
        return {
            "lost": True,
            "lost_failure": StageFailure.SCHEDULER_LOST,
            "lost_reason": f"the Dask scheduler at {self.address} went away or stopped answering",
        }

    def scheduler_alive(self) -> bool:
        """False once the client lost its scheduler (it then only tries to reconnect)."""
        return bool(self.client.status == "running")

    # --- running a stage ---------------------------------------------------------------------

    def run(
        self,
        request: StageRequest,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> StageOutcome:
        """Run ``request`` on a worker; its output lands in the request's log files here."""
        with LogFiles(request) as logs:
            return self._run(request, logs, cancellation, on_handle)

    def _run(
        self,
        request: StageRequest,
        logs: LogFiles,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> StageOutcome:
        submitted = time.monotonic()
        family = socket.AF_INET6 if ":" in self.callback_host else socket.AF_INET
        stage = os.urandom(16)
        with socket.socket(family, socket.SOCK_STREAM) as listener:
            listener.bind((self.callback_host, 0))
            listener.listen(8)
            door = Door(self, listener, self.session, stage, self.link_timeout)
            future = None
            try:
                if request.resources:
                    self._warn_unmet(request.stage_id, request.resources, cancellation)
                future = self.client.submit(
                    dask_entry.call,
                    self.remote_source,
                    "run_stage_on_worker",
                    listener.getsockname()[:2],
                    self.session,
                    stage,
                    self.supervisor_source,
                    self.link_timeout,
                    key=f"codex-stage-{request.stage_id}-{stage.hex()[:12]}",
                    pure=False,
                    retries=0,
                    resources=dict(request.resources) if request.resources else None,
                )
                # Dropping a future sends "release" at once, and the client then holds its next
                # send for its batching interval (10 ms): the release of a stage that just ended
                # would delay the very next submit. Replaced here, after a submit, it travels in
                # the same batch instead.
                self.last_submitted = future
                link = self._await_start(door, future, cancellation, submitted, request)
            except _SchedulerLost:
                _release(future)
                if cancellation.requested:  # a call given up for the cancellation: nothing ran
                    return logs.outcome(None, time.time(), 0.0, cancelled=True, host="")
                return logs.outcome(None, time.time(), 0.0, host="", **self.scheduler_lost())
            except _QueuedTooLong:
                _release(future)
                duration = time.monotonic() - submitted
                return logs.outcome(None, time.time(), duration, host="", timed_out=True)
            except BaseException:
                _release(future)
                raise
            finally:
                door.close()
        if link is None:  # cancelled while queued: nothing ever ran
            _release(future)
            return logs.outcome(None, time.time(), 0.0, cancelled=True, host="")
        if self.link_tls is not None:
            try:
                link = link._replace(sock=self.link_tls.wrap_socket(link.sock, server_side=True))
            except OSError as error:
                link.sock.close()
                raise OSError(
                    f"the TLS handshake with the stage's worker failed: {error}"
                ) from None
        with link.sock:
            mark = stage.hex()
            job = {
                "command": request.command,
                "cwd": str(self.config.mapping.worker_path(request.cwd)),
                "env": self._shipped_env(request, mark),
                "grace": self.grace_seconds,
            }
            link.sock.sendall(job_frame(link.key, job))
            follower = Follower(self, link, logs, request, cancellation, on_handle, submitted, mark)
            outcome = follower.follow()
        if outcome.may_still_run and follower.handle is not None:
            self.orphans.append(follower.handle)
        return outcome

    def _shipped_env(self, request: StageRequest, mark: str) -> dict[str, str]:
        """What a remote stage receives of this side's environment: the variables passed on by
        ``settings.dask_pass_env``, then the run's own (paths mapped to the workers' view); the
        worker adds its own environment and its interpreter (``CODEX_ORCHESTRATOR_PYTHON``)."""
        env = {name: request.env[name] for name in self.config.pass_env if name in request.env}
        env.update(request.run_env)
        for name in MAPPED_PATHS:
            if name in env:
                env[name] = str(self.config.mapping.worker_path(Path(env[name])))
        env.pop(PYTHON_ENV, None)
        env[STAGE_MARK_ENV] = mark
        return env

    def _warn_unmet(
        self, stage_id: str, resources: Mapping[str, float], cancellation: Cancellation
    ) -> None:
        """Say so when no worker has the resources a stage needs: Dask then waits for one."""
        workers = self._workers(cancellation).values()
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
        self,
        door: Door,
        future: Any,
        cancellation: Cancellation,
        submitted: float,
        request: StageRequest,
    ) -> Link | None:
        """Wait until the stage's task is admitted; None if cancelled before that.

        The stage's timeout counts from its submission, so a stage queued for resources no
        worker has times out (`_QueuedTooLong`). A stage queued for long has the scheduler
        checked, with a deadline: a scheduler that stopped answering (frozen, partitioned) is
        `_SchedulerLost` within the link timeout, not a stage waiting forever.
        """
        wake = cancellation.wakeup_fd()
        timeout = request.timeout_seconds
        ping: concurrent.futures.Future[Any] | None = None
        ping_at = submitted + min(PING_AFTER_SECONDS, self.link_timeout / 2)
        while True:
            ready, _, _ = select.select([*door.watched(), wake], [], [], POLL_SECONDS)
            if cancellation.requested:
                return None
            link = door.step(ready)
            if link is not None:
                return link
            now = time.monotonic()
            if timeout is not None and now - submitted >= timeout:
                raise _QueuedTooLong
            self._check_queued(future)
            if ping is None and now >= ping_at:
                ping = self._call(self.client.scheduler.identity(n_workers=0))
                ping_at = now
            elif ping is not None and ping.done():
                if ping.exception() is not None:
                    raise _SchedulerLost
                ping, ping_at = None, now + self.link_timeout / 2
            elif ping is not None and now - ping_at > self.link_timeout:
                ping.cancel()
                raise _SchedulerLost

    def _check_queued(self, future: Any) -> None:
        """Raise when the task can no longer start: scheduler gone, or the task failed."""
        if not self.scheduler_alive():
            raise _SchedulerLost
        if future.status == "error":
            error = future.exception(timeout=self.link_timeout)
            raise OSError(f"the Dask task failed on the worker: {type(error).__name__}: {error}")
        if future.status in ("finished", "cancelled", "lost"):
            result = future.status
            if future.status == "finished":
                result = future.result(timeout=self.link_timeout)
            raise OSError(f"the Dask task ended without running the stage ({result})")

    # --- ending what stages left -------------------------------------------------------------

    def reap_remote(self, worker: str, host: str, pgid: int, ticks: int, mark: str) -> str | None:
        """End what is left of a stage through a direct call to its worker: its group (when
        verified) and the processes carrying its mark. ``ended``, ``none`` (nothing was left),
        or None when the worker cannot be reached in time or is another machine now.

        A worker the scheduler no longer knows is gone (answered at once); when the scheduler
        itself does not answer, the worker is tried all the same."""
        with contextlib.suppress(_SchedulerLost):
            if worker not in self._workers():
                return None
        args = (self.supervisor_source, host, pgid, ticks, self.grace_seconds, mark)
        future = self._call(self._worker_call(worker, dask_entry.reap, args))
        try:
            result = future.result(
                timeout=self.link_timeout + self.grace_seconds + KILL_WAIT_SECONDS
            )
        except Exception:  # unreachable, refused or too slow: the stage is reported unchecked
            future.cancel()
            return None
        return result if result in ("ended", "none") else None

    def reap(self, handle: Handle, grace_seconds: float) -> bool:
        """End a dead run's stage on its worker, if that worker can be reached.

        A stage whose end is recorded (its supervisor reported it, or it was reaped) is left
        alone. One that cannot be checked but whose supervisor ends it by a recorded time is
        waited for until then, so that it never runs beside the stage run again.
        """
        if handle.get(HANDLE_KIND) != KIND or handle.get(HANDLE_REMOTE_END) in (
            "reported",
            "reaped",
        ):
            return False
        pgid, ticks = checked_pid(handle.get(HANDLE_PGID)), recorded_start_ticks(handle)
        worker, host = handle.get(HANDLE_WORKER), handle.get(HANDLE_HOST)
        mark = handle.get(HANDLE_STAGE_MARK)
        if (
            pgid is None
            or isinstance(ticks, bool)
            or not isinstance(ticks, int)
            or not isinstance(worker, str)
            or not isinstance(host, str)
        ):
            note(f"warning: not ending recorded remote stage {dict(handle)!r}: malformed handle")
            return False
        mark = mark if isinstance(mark, str) and mark.isalnum() else ""
        found = self.reap_remote(worker, host, pgid, ticks, mark)
        if found is not None:
            return found == "ended"
        ends_by = _parse_time(handle.get(HANDLE_REMOTE_ENDS_BY))
        if ends_by is None:
            note(
                f"warning: could not check process group {pgid} on {host} (worker {worker} "
                "cannot be reached); if it still runs there, end it by hand"
            )
            return False
        # Never longer than a supervisor cut off at the last contact may take (a recorded
        # time further away is not trusted).
        bound = self.link_timeout + grace_seconds + KILL_WAIT_SECONDS + REPORT_MARGIN_SECONDS
        wait = min(bound, ends_by - time.time())
        if wait > 0:
            time.sleep(wait)
        note(
            f"could not reach worker {worker} to check process group {pgid} on {host}; its "
            f"supervisor ended it by {handle.get(HANDLE_REMOTE_ENDS_BY)}, which has passed"
        )
        return False

    def close(self) -> None:
        """Check again the stages lost without a verified end, then disconnect.

        Every other stage's group ended with its supervisor (shell exit, orchestrator gone or
        silent, worker gone).
        """
        if self.scheduler_alive():
            for handle in self.orphans:
                self.reap_remote(
                    str(handle[HANDLE_WORKER]),
                    str(handle[HANDLE_HOST]),
                    int(handle[HANDLE_PGID]),
                    int(handle[HANDLE_START_TICKS]),
                    str(handle.get(HANDLE_STAGE_MARK, "")),
                )
        self.orphans.clear()
        self.last_submitted = None
        with contextlib.suppress(Exception):  # a scheduler gone or frozen: nothing to wait for
            self.client.close(timeout=self.link_timeout)


def _release(future: Any) -> None:
    """Let the scheduler forget a task (a batched message: never waits for the scheduler)."""
    if future is not None:
        future.release()


def _parse_time(value: object) -> float | None:
    """Seconds since the epoch of a recorded ``YYYY-MM-DDTHH:MM:SSZ`` time, else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return parsed.timestamp()


class DetachedDaskExecutor:
    """The Dask executor of a detached run: checked before the fork, connected after it.

    `check_scheduler` ran in the caller, before the run was created. `connect` runs in the
    detached process, before its first stage (a Dask client's threads would not survive the
    fork); it checks again, so a scheduler gone in between is seen at once, with the same
    deadline and answering a cancellation (``cancel`` of the run) meanwhile. Handles given to
    `reap` before then (``resume --detach`` ends what the dead run left, before it forks) are
    reaped once connected, still before any stage starts. When the connection fails after all,
    every stage fails at once as ``scheduler-lost``, with the reason in the orchestrator's log:
    the run ends ``failed``, it never hangs.
    """

    name = KIND

    def __init__(
        self, connect: Callable[[Cancellation | None], DaskExecutor], address: str
    ) -> None:
        """``connect``: builds the connected executor (exit-2 errors say what is wrong)."""
        self.address = address
        self.options = {"scheduler": address}
        self._connect = connect
        self._lock = threading.Lock()
        self._connected: DaskExecutor | None = None
        self._failure: str | None = None
        self._reaps: list[tuple[Handle, float]] = []

    def connected(self, cancellation: Cancellation | None = None) -> DaskExecutor | None:
        """The connected executor (connecting on the first call), or None if that failed or
        was cancelled."""
        with self._lock:
            if self._connected is None and self._failure is None:
                try:
                    self._connected = self._connect(cancellation)
                except ConnectCancelled:
                    return None
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
        executor = self.connected(cancellation)
        if executor is not None:
            return executor.run(request, cancellation, on_handle)
        with LogFiles(request) as logs:
            if self._failure is None:  # cancelled while connecting: nothing ran
                return logs.outcome(None, time.time(), 0.0, host="", cancelled=True)
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
        """Reap a remote stage's handle once connected (after the fork)."""
        if self._connected is not None:
            return self._connected.reap(handle, grace_seconds)
        if handle.get(HANDLE_KIND) == KIND:
            self._reaps.append((handle, grace_seconds))
        return False

    def close(self) -> None:
        """Disconnect; remote handles still waiting to be reaped are reaped first."""
        executor = self.connected() if self._reaps else self._connected
        if executor is not None:
            executor.close()
