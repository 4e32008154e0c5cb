"""One contract, every executor: the same stages run through the local executor and through
the Dask executor (a real cluster) must end the same way (as filelock runs one suite over
every lock type). Each test drives `Executor.run` in-process with a real stage: its exit
code, its captured output, its environment, its timeout (the whole process group ended,
SIGKILL after the grace) and its cancellation."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.executors.base import (
    HANDLE_KIND,
    HANDLE_PGID,
    HANDLE_START_TICKS,
    Cancellation,
    Executor,
    Handle,
    StageOutcome,
    StageRequest,
)
from codex_orchestrator.executors.local import LocalExecutor
from conftest import TEST_MARKER_ENV
from helpers.dask_cluster import DaskCluster, group_gone, start_cluster
from helpers.processes import alive, wait_for

GRACE = 0.5
#: A stage whose processes all ignore SIGTERM: only SIGKILL (after the grace) ends them. The
#: background child's pid is written to ``bg.pid`` to check it ended with its group.
STUBBORN = "trap '' TERM; sleep 60 & echo $! > bg.pid; wait"


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A scheduler and one worker, shared by this file's Dask tests. Started from within the
    first Dask test: without that test's process marker, so that its end leaves them be."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TEST_MARKER_ENV)
        cluster = start_cluster(tmp_path_factory.mktemp("dask"), ())
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def dask_executor(dask_cluster: DaskCluster) -> Iterator[Executor]:
    """One connection to the cluster for this file's Dask tests (workers see this machine's
    paths unchanged)."""
    from codex_orchestrator.executors.dask.client import DaskConfig, WorkerMapping, connect

    mapping = WorkerMapping(Path("/"), Path("/"))
    executor = connect(DaskConfig(dask_cluster.address, "test", mapping, GRACE, 10.0, 60.0))
    try:
        yield executor
    finally:
        executor.close()


@pytest.fixture(
    params=[
        "local",
        pytest.param("dask", marks=pytest.mark.dask),
    ]
)
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """Each executor in turn."""
    if request.param == "dask":
        yield request.getfixturevalue("dask_executor")
        return
    local = LocalExecutor(GRACE)
    try:
        yield local
    finally:
        local.close()


class Stage:
    """One stage run through an executor, in this thread or another."""

    def __init__(self, executor: Executor, tmp_path: Path, command: str, **fields: Any) -> None:
        self.executor = executor
        self.cwd = tmp_path
        run_env = {"CONTRACT_VALUE": "from the run", **fields.pop("run_env", {})}
        self.request = StageRequest(
            stage_id="contract",
            command=command,
            cwd=tmp_path,
            env={**os.environ, **run_env},
            stdout_path=tmp_path / "stdout.log",
            stderr_path=tmp_path / "stderr.log",
            run_env=run_env,
            **fields,
        )
        self.cancellation = Cancellation(GRACE)
        self.handles: list[Handle] = []
        self.started = threading.Event()
        self.outcome: StageOutcome | None = None

    def _on_handle(self, handle: Handle) -> None:
        self.handles.append(dict(handle))
        self.started.set()

    def run(self) -> StageOutcome:
        try:
            self.outcome = self.executor.run(self.request, self.cancellation, self._on_handle)
        finally:
            self.started.set()
        return self.outcome

    def pgid(self) -> int:
        return int(self.handles[0][HANDLE_PGID])

    def close(self) -> None:
        self.cancellation.close()


@pytest.fixture
def stage(executor: Executor, tmp_path: Path) -> Iterator[Any]:
    """Makes stages for ``executor``; each one's cancellation is closed afterwards."""
    made: list[Stage] = []

    def make(command: str, **fields: Any) -> Stage:
        made.append(Stage(executor, tmp_path, command, **fields))
        return made[-1]

    yield make
    if isinstance(executor, LocalExecutor):
        executor.close()  # before the cancellations: it may wait on their hurry descriptor
    for each in made:
        each.close()


def test_success_captures_both_streams_and_hands_a_handle(executor: Executor, stage: Any) -> None:
    ran = stage("printf 'out\\n'; printf 'err\\n' >&2")
    outcome = ran.run()
    assert (outcome.exit_code, outcome.timed_out, outcome.cancelled, outcome.killed) == (
        0,
        False,
        False,
        False,
    )
    assert (outcome.stdout_tail, outcome.stderr_tail) == (b"out\n", b"err\n")
    assert (outcome.stdout_bytes, outcome.stderr_bytes) == (4, 4)
    assert ran.request.stdout_path.read_bytes() == b"out\n"
    assert ran.request.stderr_path.read_bytes() == b"err\n"
    [handle] = ran.handles
    assert handle[HANDLE_KIND] == executor.name and isinstance(handle[HANDLE_START_TICKS], int)


def test_a_failing_stage_reports_its_exit_code(stage: Any) -> None:
    outcome = stage("echo partial; exit 7").run()
    assert (outcome.exit_code, outcome.stdout_tail) == (7, b"partial\n"), outcome
    assert not (outcome.timed_out or outcome.cancelled or outcome.killed or outcome.lost)


def test_the_run_environment_reaches_the_stage(stage: Any) -> None:
    outcome = stage('printf %s "$CONTRACT_VALUE"', run_env={"CONTRACT_EXTRA": "x"}).run()
    assert outcome.stdout_tail == b"from the run"


@pytest.mark.slow
def test_a_timeout_ends_the_whole_group_with_sigkill_after_the_grace(
    stage: Any, tmp_path: Path
) -> None:
    ran = stage(STUBBORN, timeout_seconds=0.5)
    outcome = ran.run()
    assert outcome.timed_out and outcome.killed and not outcome.cancelled
    assert outcome.exit_code == 128 + signal.SIGKILL
    assert group_gone(ran.pgid())
    assert not alive(int((tmp_path / "bg.pid").read_text()))


@pytest.mark.slow
def test_a_cancellation_ends_the_whole_group(stage: Any, tmp_path: Path) -> None:
    ran = stage("sleep 60 & echo $! > bg.pid; wait")
    worker = threading.Thread(target=ran.run)
    worker.start()
    try:
        wait_for(lambda: ran.handles and (tmp_path / "bg.pid").stat().st_size, what="the stage")
        ran.cancellation.request(signal.SIGTERM)
    finally:
        if not ran.cancellation.requested:
            ran.cancellation.request(signal.SIGTERM)
        worker.join(timeout=30)
    assert ran.outcome is not None and ran.outcome.cancelled and not ran.outcome.timed_out
    assert ran.outcome.exit_code == 128 + signal.SIGTERM and not ran.outcome.killed
    assert group_gone(ran.pgid())
    assert not alive(int((tmp_path / "bg.pid").read_text()))
