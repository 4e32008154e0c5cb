"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

Every process is started here and ended here, by its recorded pid. Workers run without this
repository on their path: the executor must not need codex-orchestrator installed on workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import processes
from codex_orchestrator.procfs import live_group_members
from conftest import Repo

DASK = Path(sys.executable).with_name("dask")
START_TIMEOUT_SECONDS = 60.0


class DaskCluster:
    """A scheduler and its workers, each a process this object started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.address = ""
        self.env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "wb") as log:  # the child keeps its own copy
            return subprocess.Popen(
                [str(DASK), *args],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def start_scheduler(self) -> str:
        """Start ``dask scheduler`` on a random port; return its address once it listens."""
        info = self.workdir / "scheduler.json"
        self.scheduler = self._spawn(
            "scheduler",
            "scheduler",
            "--host",
            "127.0.0.1",
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

    def start_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        """Start one single-threaded ``dask worker`` without a nanny."""
        name = f"worker-{len(self.workers)}"
        worker = self._spawn(
            name,
            "worker",
            self.address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--name",
            name,
            "--local-directory",
            str(self.workdir / name),
            *extra,
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
        """End every process this cluster started: SIGTERM, then SIGKILL, by recorded pid."""
        processes = [*self.workers, *([self.scheduler] if self.scheduler else [])]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_cluster(workdir: Path, *worker_options: tuple[str, ...]) -> DaskCluster:
    """A scheduler and one worker per entry of ``worker_options``, all registered."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = DaskCluster(workdir)
    try:
        cluster.start_scheduler()
        for options in worker_options:
            cluster.start_worker(*options)
        cluster.wait_for_workers(len(worker_options))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def dask_env(cluster: DaskCluster) -> dict[str, str]:
    """The environment that sends a run's stages to ``cluster``."""
    return {
        "CODEX_ORCHESTRATOR_EXECUTOR": "dask",
        "CODEX_ORCHESTRATOR_DASK_SCHEDULER": cluster.address,
    }


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


def first_stage_handle(repo: Repo, timeout: float = 30.0) -> dict[str, Any]:
    """The handle of the first stage of the only run in the repository, once it runs."""
    handle: dict[str, Any] = processes.wait_for(
        lambda: running_handle(repo, 0), timeout, "the remote stage to start"
    )
    return handle
