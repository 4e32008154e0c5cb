"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

Every process is started here and ended here, by its recorded pid. Workers run without this
repository on their path: the executor must not need codex-orchestrator installed on workers.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import helpers.processes as processes
from codex_orchestrator.engine.recovery import recorded_handles
from codex_orchestrator.executors.base import RUN_ID_ENV, recorded_start_ticks
from codex_orchestrator.executors.dask.worker.supervisor import STAGE_MARK_ENV as MARK_ENV
from codex_orchestrator.executors.process import leftover_group_problem
from codex_orchestrator.util.procfs import live_group_members, process_start_ticks
from conftest import Repo

DASK = Path(sys.executable).with_name("dask")
START_TIMEOUT_SECONDS = 60.0
#: The whole handshake frame a Dask scheduler writes first on a connection (its content aside):
#: bytes after the first count, one frame, its length, then the frame.
DASK_GREETING = struct.pack("=3Q", 58, 1, 42) + bytes(42)
#: Dask's own self-observation, slowed or off in the test clusters: by default a worker samples
#: its threads every 10 ms for the dashboard's profiles, and every process checks its event loop
#: every 20 ms and its memory every 100-500 ms. An idle three-process cluster spent about a
#: tenth of a core on that (2.1 CPU-seconds in 20 s, 0.3 with these), and a shared cluster is
#: idle most of its module. Nothing here runs a dashboard or a memory limit.
QUIET_DASK = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "2s",
    "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "1s",
}


class DaskCluster:
    """A scheduler and its workers, each a process this object started (each leads its own
    session, so a test may signal one's process group without touching the others)."""

    def __init__(
        self, workdir: Path, host: str = "127.0.0.1", options: tuple[str, ...] = ()
    ) -> None:
        """``options``: given to the scheduler and every worker (e.g. the TLS files)."""
        self.workdir = workdir
        self.host = host
        self.options = options
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.address = ""
        self.env = {
            **{key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
            **QUIET_DASK,
        }

    def _spawn(
        self, name: str, *args: str, prefix: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "wb") as log:  # the child keeps its own copy
            return subprocess.Popen(
                [*prefix, str(DASK), *args, *self.options],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def start_scheduler(self) -> str:
        """Start ``dask scheduler`` on a random port; return its address once it listens."""
        info = self.workdir / "scheduler.json"
        self.scheduler = self._spawn(
            "scheduler",
            "scheduler",
            "--host",
            self.host,
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(info),
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                self.address = json.loads(info.read_text())["address"]
                return self.address
            except (OSError, ValueError, KeyError):
                if self.scheduler.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"dask scheduler did not start: {self.log('scheduler')}")

    def start_worker(
        self, *extra: str, host: str | None = None, prefix: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        """Start one single-threaded ``dask worker`` without a nanny (``prefix``: a command
        that runs it, e.g. in a network namespace)."""
        name = f"worker-{len(self.workers)}"
        worker = self._spawn(
            name,
            "worker",
            self.address,
            "--host",
            host or self.host,
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--name",
            name,
            "--local-directory",
            str(self.workdir / name),
            *extra,
            prefix=prefix,
        )
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, count: int) -> None:
        """Wait until ``count`` workers have said they registered with the scheduler."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            ready = sum(
                "Registered to" in self.log(f"worker-{n}") for n in range(len(self.workers))
            )
            if ready >= count:
                return
            time.sleep(0.1)
        raise RuntimeError(f"dask workers did not register: {self.log('worker-0')}")

    def worker_of(self, handle: dict[str, Any]) -> subprocess.Popen[bytes]:
        """The worker process a stage's handle names (one this cluster started)."""
        return next(worker for worker in self.workers if worker.pid == handle["worker_pid"])

    def worker_address(self, index: int) -> str:
        """The address worker ``index`` listens on, from its log."""
        for line in self.log(f"worker-{index}").splitlines():
            if "Start worker at:" in line:
                return line.split("Start worker at:")[1].strip()
        raise RuntimeError(f"worker-{index} has not started")

    def log(self, name: str) -> str:
        """The output of process ``name`` so far."""
        try:
            return (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """End every process this cluster started, by recorded pid: the workers first (a
        worker whose scheduler is gone waits for it before it exits), then the scheduler;
        SIGCONT (a test may have stopped one), SIGTERM, then SIGKILL."""
        _end([*self.workers])
        _end([self.scheduler] if self.scheduler else [])


def _end(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_cluster(
    workdir: Path, *worker_options: tuple[str, ...], options: tuple[str, ...] = ()
) -> DaskCluster:
    """A scheduler and one worker per entry of ``worker_options``, all registered."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = DaskCluster(workdir, options=options)
    try:
        cluster.start_scheduler()
        for options in worker_options:
            cluster.start_worker(*options)
        cluster.wait_for_workers(len(worker_options))
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextmanager
def running_cluster(
    workdir: Path, *worker_options: tuple[str, ...], options: tuple[str, ...] = ()
) -> Iterator[DaskCluster]:
    """`start_cluster`, stopped (every process it started ended) when the block ends."""
    cluster = start_cluster(workdir, *worker_options, options=options)
    try:
        yield cluster
    finally:
        cluster.stop()


#: The deadline of a connection to a live test cluster: generous, since no test here is about
#: it (those that are give their own), and a loaded machine answered late to the default 10 s.
PATIENT_CONNECT_SECONDS = 60.0
PATIENT_CONNECT = {"CODEX_ORCHESTRATOR_DASK_CONNECT_TIMEOUT_SECONDS": str(PATIENT_CONNECT_SECONDS)}


@pytest.fixture(autouse=True)
def patient_connect(request: pytest.FixtureRequest) -> None:
    """Give the test's repository `PATIENT_CONNECT` (a call's own ``env`` still overrides it).
    Test modules import it to use it."""
    if "repo" in request.fixturenames:
        request.getfixturevalue("repo").env.update(PATIENT_CONNECT)


@pytest.fixture(autouse=True)
def no_stage_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, no process of a stage its runs recorded may still run (checked by
    recorded process group and stage mark, on this machine, where every worker runs). Test
    modules import it to use it."""
    repo = request.getfixturevalue("repo") if "repo" in request.fixturenames else None
    yield
    if repo is not None:
        assert_no_stage_left(repo)


def dask_env(cluster: DaskCluster) -> dict[str, str]:
    """The environment that sends a run's stages to ``cluster``."""
    return {
        "CODEX_ORCHESTRATOR_EXECUTOR": "dask",
        "CODEX_ORCHESTRATOR_DASK_SCHEDULER": cluster.address,
    }


@contextmanager
def remote_run(repo: Repo, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[str]]:
    """``start --format json ARGS`` in the background; killed (by its pid) if the test left it."""
    process = repo.spawn("start", "--format", "json", *args, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a test may have stopped it
            process.kill()
            process.wait()


def run_processes(run_id: str) -> dict[int, int]:
    """``{pid: start ticks}`` of live processes on this machine whose environment names the run
    (every stage's processes inherit it, remote ones too)."""
    return processes.marked_processes(f"{RUN_ID_ENV}={run_id}")


def group_gone(pgid: int) -> bool:
    """True once no live process is left in process group ``pgid``."""
    return live_group_members(pgid) == []


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (a stage's parent is its supervisor)."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def running_handle(repo: Repo, stage_index: int) -> dict[str, Any] | None:
    """The handle of a running stage of the only run in the repository, once recorded."""
    for manifest_path in (repo.root / ".runs").glob("*/cli/*/manifest.json"):
        try:
            entry = json.loads(manifest_path.read_text())["commands"][stage_index]
        except (OSError, ValueError):
            return None
        handle = entry.get("handle")
        if entry["status"] == "running" and isinstance(handle, dict):
            return handle
    return None


def first_stage_handle(repo: Repo, timeout: float = 60.0) -> dict[str, Any]:
    """The handle of the first stage of the only run in the repository, once it runs (a
    loaded machine took over 30 s to import Dask, connect and start a stage)."""
    handle: dict[str, Any] = processes.wait_for(
        lambda: running_handle(repo, 0), timeout, "the remote stage to start"
    )
    return handle


def stage_processes(repo: Repo) -> dict[int, int]:
    """``{pid: start ticks}`` of the live processes of every stage the repository's runs
    recorded: each handle's process group (once verified to be the stage's, not a reused id)
    and, for remote stages, the processes carrying the stage's mark (those that left the group)."""
    found: dict[int, int] = {}
    for manifest_path in (repo.root / ".runs").glob("*/cli/*/manifest.json"):
        try:
            commands = json.loads(manifest_path.read_text())["commands"]
        except (OSError, ValueError, KeyError):
            continue
        for handle in recorded_handles(manifest_path.parent, commands):
            pgid = handle.get("pgid")
            ticks = recorded_start_ticks(handle)
            if isinstance(pgid, int) and leftover_group_problem(pgid, ticks) is None:
                for pid in live_group_members(pgid) or []:
                    start = process_start_ticks(pid)
                    if start is not None:
                        found[pid] = start
            if isinstance(handle.get("stage_mark"), str):
                found.update(processes.marked_processes(f"{MARK_ENV}={handle['stage_mark']}"))
    return found


def assert_no_stage_left(repo: Repo, grace: float = 10.0) -> None:
    """Fail when a recorded stage's process still runs ``grace`` seconds on; such processes
    are SIGKILLed first, by pid, each while its start time is the one recorded."""
    deadline = time.monotonic() + grace
    while (left := stage_processes(repo)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, ticks in left.items():
        if process_start_ticks(pid) == ticks:
            processes.signal_recorded_pid(pid, signal.SIGKILL)
    assert not left, f"stage processes left running: {left}"


class Namespace(NamedTuple):
    """A network namespace joined to this one by a veth pair: ``host_ip`` here, ``inner_ip``
    inside it."""

    name: str
    host_device: str
    inner_device: str
    host_ip: str
    inner_ip: str

    def cut(self) -> None:
        """Partition the link: every packet either way is dropped, silently (no reset)."""
        for prefix, device in ((), self.host_device), (self.inside(), self.inner_device):
            _ip(*prefix, "tc", "qdisc", "replace", "dev", device, "root", "pfifo", "limit", "0")

    def heal(self) -> None:
        """Let packets through again."""
        for prefix, device in ((), self.host_device), (self.inside(), self.inner_device):
            subprocess.run([*prefix, "tc", "qdisc", "del", "dev", device, "root"], check=False)

    def inside(self) -> tuple[str, ...]:
        """The prefix that runs a command inside the namespace."""
        return ("ip", "netns", "exec", self.name)


def _ip(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextmanager
def network_namespace() -> Iterator[Namespace]:
    """A fresh network namespace with a veth pair to this one (needs root and ``ip``); removed
    afterwards. The /30 subnet is drawn at random from 10.0.0.0/8."""
    tag = uuid.uuid4().hex[:8]
    a, b = int(tag[:2], 16), int(tag[2:4], 16) & 0xFC
    space = Namespace(
        f"codex-test-{tag}", f"cxh{tag}", f"cxn{tag}", f"10.{a}.{b}.1", f"10.{a}.{b}.2"
    )
    _ip("ip", "netns", "add", space.name)
    try:
        _ip("ip", "link", "add", space.host_device, "type", "veth", "peer", space.inner_device)
        _ip("ip", "link", "set", space.inner_device, "netns", space.name)
        _ip("ip", "addr", "add", f"{space.host_ip}/30", "dev", space.host_device)
        _ip("ip", "link", "set", space.host_device, "up")
        _ip(
            "ip", "-n", space.name, "addr", "add", f"{space.inner_ip}/30", "dev", space.inner_device
        )
        _ip("ip", "-n", space.name, "link", "set", space.inner_device, "up")
        _ip("ip", "-n", space.name, "link", "set", "lo", "up")
        yield space
    finally:
        subprocess.run(["ip", "link", "del", space.host_device], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", space.name], check=False, capture_output=True)
