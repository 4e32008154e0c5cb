"""Worker-side supervisor of remote stages: a small fork server, one per Dask worker.

A Dask worker starts it once (``dask_remote.Supervisors``) with a Unix socket as file
descriptor ``argv[1]``. For each stage, the worker hands over the stage (command, cwd,
environment), the socket connected to the orchestrator and a "done" socket; the server forks a
supervisor for it, so a stage never waits for an interpreter to start. The supervisor runs
``/bin/sh -c COMMAND`` in its own process group and streams the group's stdout and stderr back
as frames, in bounded chunks, with blocking writes (the orchestrator's reading speed is the
back-pressure). It honours control frames from the orchestrator (terminate with a grace
period, kill), and ends the group when: the shell exits (helpers do not outlive their stage on
a worker), the orchestrator's socket closes, or the Dask worker dies (a pidfd of the worker,
and ``PR_SET_PDEATHSIG`` along the worker, server, supervisor chain).

The file is shipped to workers as source text and run with ``python -I -S -c``, so workers need
no copy of codex-orchestrator; it imports only standard-library modules. The orchestrator
imports it for the frame constants. See docs/executors.md for the protocol.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

HEADER = struct.Struct(">BI")
JOB_HEADER = struct.Struct(">I")
CONTROL = struct.Struct(">Bd")
CHUNK_BYTES = 1024 * 1024
KEEPALIVE_SECONDS = 0.5
FINAL_DRAIN_SECONDS = 1.0
WORKER_EXIT_WAIT_SECONDS = 1.0

FRAME_STDOUT = 1
FRAME_STDERR = 2
FRAME_STARTED = 3
FRAME_ALIVE = 4
FRAME_EXIT = 5
FRAME_SPAWN_FAILED = 6

CONTROL_TERMINATE = 1
CONTROL_KILL = 2

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SIGTERM = 15
SIGKILL = 9
#: File descriptors handed over with each job: the orchestrator's socket, then "done".
JOB_FDS = 2


def start_ticks(pid: int) -> int:
    """The start time of ``pid`` in clock ticks since boot (0 when unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def live_processes() -> list[tuple[int, int, int, int]]:
    """(pid, parent, group, start ticks) of every process that is not a zombie."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
                if fields[0] != b"Z":
                    found.append((int(name), int(fields[1]), int(fields[2]), int(fields[19])))
            except (OSError, IndexError, ValueError):
                continue
    return found


def member_starts(pgid: int) -> list[int]:
    """Start ticks of the live processes of group ``pgid``."""
    return [start for _pid, _parent, group, start in live_processes() if group == pgid]


def end_strays(grace: float) -> None:
    """End what is left of our descendants once the stage's group is gone.

    A process that left the group (``setsid``, a daemon) is re-parented to us, the subreaper;
    it must not outlive its stage on the worker either. SIGTERM, then SIGKILL after ``grace``.
    """
    deadline, sig = time.monotonic() + grace, SIGTERM
    while strays := children():
        for pid in strays:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        time.sleep(0.02)
        while _reaped_one():
            pass
        if time.monotonic() >= deadline:
            sig = SIGKILL


def children() -> list[int]:
    """Our live children: from ``/proc/self/task/<tid>/children`` (no full /proc scan)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as listing:
            pids = [int(pid) for pid in listing.read().split()]
    except OSError:
        return [pid for pid, parent, _g, _s in live_processes() if parent == me]
    return [pid for pid in pids if not _zombie(pid)]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def _reaped_one() -> bool:
    try:
        return os.waitpid(-1, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return False


class Channel:
    """The socket to the orchestrator: framed, blocking sends; control frames received."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.open = True
        self.last_send = time.monotonic()
        self.pending = b""

    def send(self, kind: int, payload: bytes | memoryview = b"") -> None:
        """Send one frame; a closed or broken connection marks the channel closed."""
        if not self.open:
            return
        parts = [HEADER.pack(kind, len(payload)), payload]
        try:
            while parts:
                written = os.writev(self.fd, parts)
                while parts and written >= len(parts[0]):
                    written -= len(parts[0])
                    parts.pop(0)
                if parts:
                    parts[0] = memoryview(parts[0])[written:]
        except OSError:
            self.open = False
        self.last_send = time.monotonic()

    def controls(self) -> list[tuple[int, float]] | None:
        """Control frames received so far; None once the orchestrator closed the socket."""
        try:
            data = os.read(self.fd, 4096)
        except OSError:
            data = b""
        if not data:
            self.open = False
            return None
        self.pending += data
        frames = []
        while len(self.pending) >= CONTROL.size:
            frames.append(CONTROL.unpack(self.pending[: CONTROL.size]))
            self.pending = self.pending[CONTROL.size :]
        return frames


class Stage:
    """The stage's process group and the bookkeeping of its teardown."""

    def __init__(self, pid: int, grace: float) -> None:
        self.pid = pid
        self.grace = grace
        self.kill_at: float | None = None
        self.killed = False
        self.status: int | None = None

    def signal(self, sig: int) -> bool:
        """Signal the whole group; False once it is gone."""
        try:
            os.killpg(self.pid, sig)
        except OSError:
            return False
        return True

    def terminate(self, grace: float) -> None:
        """SIGTERM the group now and SIGKILL it once ``grace`` seconds have passed."""
        deadline = time.monotonic() + grace
        if self.kill_at is None or deadline < self.kill_at:
            self.kill_at = deadline
        self.signal(SIGTERM)

    def escalate(self) -> None:
        """SIGKILL the group once its grace period is spent."""
        if self.kill_at is not None and time.monotonic() >= self.kill_at and not self.killed:
            self.killed = self.signal(SIGKILL) or self.killed

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
        return self.status is not None

    def wait_gone(self) -> None:
        """Wait until the group is gone, escalating to SIGKILL when its grace is spent."""
        while self.signal(0) and (self.kill_at is None or time.monotonic() < self.kill_at + 2.0):
            self.reap()
            self.escalate()
            time.sleep(0.01)

    def exit_code(self) -> int:
        """Shell convention: killed by signal N is 128+N."""
        code = os.waitstatus_to_exitcode(self.status or 0)
        return 128 - code if code < 0 else code


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


def reap(pgid: int, leader_start_ticks: int, grace: float) -> int:
    """End group ``pgid`` left by a dead run if it is verified to be the stage's; 0 if ended.

    The leader, when alive, must have the recorded start time; without a leader, no member
    may be older than the recorded leader (Linux does not reuse a pid while its group lives).
    The same rule as the local executor's, restated here: this file runs on workers alone.
    """
    stage = Stage(pgid, grace)
    if pgid <= 1 or not stage.signal(0):
        return 3
    ticks = start_ticks(pgid)
    if ticks and ticks != leader_start_ticks:
        return 3  # the id now belongs to another process: not ours to signal
    if not ticks and any(start < leader_start_ticks for start in member_starts(pgid)):
        return 3
    stage.terminate(grace)
    stage.wait_gone()
    return 0


def receive_job(link: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """The next stage from the worker: its description and descriptors; None once closed."""
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
    server = os.getpid()
    with socket.socket(fileno=jobs) as link:
        while (received := receive_job(link)) is not None:
            job, (channel_fd, done_fd) = received
            try:
                child = os.fork()
            except OSError as error:  # out of processes or memory: say so, not "worker lost"
                message = f"cannot fork the stage's supervisor: {error.strerror or error}"
                Channel(channel_fd).send(FRAME_SPAWN_FAILED, message.encode())
                child = -1
            if child == 0:
                code = 1
                try:
                    link.close()
                    code = supervise_job(libc, job, channel_fd, done_fd, worker_pid, server)
                finally:  # never back into the server's loop, whatever happened
                    os._exit(code)
            os.close(channel_fd)
            os.close(done_fd)
    return 0


def supervise_job(
    libc: Any, job: dict[str, Any], channel_fd: int, done_fd: int, worker_pid: int, server: int
) -> int:
    """In the forked supervisor: run the job's stage; "done" gets the code and then closes."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # we wait for the stage and its orphans
    libc.prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0)  # the server ends with the worker; so do we
    channel = Channel(channel_fd)
    if os.getppid() != server:
        channel.send(FRAME_SPAWN_FAILED, b"the Dask worker died before the stage started")
        return 1
    # Orphans of the stage become our children, so they can be reaped and never linger as
    # zombies that keep the group looking alive.
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(SIGTERM, lambda *_: None)
    code = run_stage(job, channel, wake_r, worker_pid)
    with contextlib.suppress(OSError):
        os.write(done_fd, str(code).encode())
    return code


def main(argv: list[str]) -> int:
    """Serve stages handed over on the socket ``argv[1]`` by worker ``argv[2]`` (see `serve`).

    ``reap PGID TICKS GRACE`` ends a leftover group instead (see `reap`).
    """
    if argv[1] == "reap":
        return reap(int(argv[2]), int(argv[3]), float(argv[4]))
    return serve(int(argv[1]), int(argv[2]))


def run_stage(job: dict[str, Any], channel: Channel, wake_r: int, worker_pid: int) -> int:
    """Start the job's command, stream it until it is over, send the exit report."""
    cwd, command, worker, env = job["cwd"], job["command"], job["worker"], job["env"]
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
        channel.send(FRAME_SPAWN_FAILED, message.encode("utf-8", "replace"))
        return 1
    os.close(stdout_w)
    os.close(stderr_w)
    stage = Stage(pid, float(job["grace"]))
    host = os.uname().nodename
    started_frame = f"{pid} {start_ticks(pid)} {worker_pid} {host} {worker}"
    channel.send(FRAME_STARTED, started_frame.encode())
    streams = {stdout_r: FRAME_STDOUT, stderr_r: FRAME_STDERR}
    lost = supervise(stage, channel, streams, wake_r, worker_pid)
    ended = time.monotonic()
    summary = f"{stage.exit_code()} {int(stage.killed)} {int(lost)} {ended - started:.6f}"
    channel.send(FRAME_EXIT, summary.encode())
    return 0


def supervise(
    stage: Stage, channel: Channel, streams: dict[int, int], wake_r: int, worker_pid: int
) -> bool:
    """Stream output until the shell exits and its group is gone; True if the worker died."""
    poller = select.poll()
    for fd in (*streams, channel.fd, wake_r):
        poller.register(fd, select.POLLIN)
    exit_fd = _exit_fd(stage.pid)
    if exit_fd >= 0:
        poller.register(exit_fd, select.POLLIN)
    worker_fd = _exit_fd(worker_pid)  # readable once the whole worker process has exited
    if worker_fd >= 0:
        poller.register(worker_fd, select.POLLIN)
    woken = False
    shell_done = group_gone_at = None
    while True:
        now = time.monotonic()
        if shell_done is None and stage.reap():
            shell_done = now
            if exit_fd >= 0:
                poller.unregister(exit_fd)
            stage.terminate(stage.grace)  # helpers the shell left behind end with their stage
        stage.escalate()
        if shell_done is not None and group_gone_at is None and not stage.signal(0):
            group_gone_at = now
        if shell_done is not None and not streams:
            break
        if group_gone_at is not None and now - group_gone_at > FINAL_DRAIN_SECONDS:
            break  # a process that left the group still holds a pipe: stop waiting for it
        if now - channel.last_send >= KEEPALIVE_SECONDS:
            channel.send(FRAME_ALIVE)
        wait_ms = 100 if exit_fd >= 0 and shell_done is None else 20
        for fd, _event in poller.poll(wait_ms):
            if fd in streams:
                data = os.read(fd, CHUNK_BYTES)
                if data:
                    channel.send(streams[fd], data)
                else:
                    poller.unregister(fd)
                    del streams[fd]
            elif fd == wake_r:
                os.read(wake_r, 512)
                woken = True
                stage.terminate(stage.grace)
            elif fd == worker_fd:
                poller.unregister(worker_fd)
                woken = True
                stage.terminate(stage.grace)
            elif fd == channel.fd:
                controls = channel.controls()
                if controls is None:
                    poller.unregister(fd)
                    stage.terminate(stage.grace)  # the orchestrator is gone: so is the stage
                for kind, grace in controls or ():
                    stage.terminate(0.0 if kind == CONTROL_KILL else grace)
    stage.wait_gone()
    stage.reap()
    end_strays(0.0 if stage.killed else stage.grace)
    return woken and worker_died(worker_fd, worker_pid)


def worker_died(worker_fd: int, worker_pid: int) -> bool:
    """True once the worker process is gone (given a moment to finish dying).

    The parent-death signal fires when the worker *thread* that started the server ends, which
    may come a little before the rest of the worker process exits; a SIGTERM while the worker
    lives on is a plain request to stop, not a lost worker.
    """
    if worker_fd < 0:  # no pidfd (old kernel): poll the pid for the same moment
        deadline = time.monotonic() + WORKER_EXIT_WAIT_SECONDS
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        return not _alive(worker_pid)
    poller = select.poll()
    poller.register(worker_fd, select.POLLIN)
    return bool(poller.poll(int(WORKER_EXIT_WAIT_SECONDS * 1000)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _exit_fd(pid: int) -> int:
    """A pidfd that becomes readable when ``pid`` exits, or -1 (then the loop polls)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


if __name__ == "__main__":
    os._exit(main(sys.argv))
