"""Every way a worker, the network or the scheduler fails, on a real cluster: nothing is left
running, nothing is recorded falsely, and a stage never runs twice at once.

A stage's helpers (with a zombie, with ``setsid``), a ``kill -9`` of the worker's process
group, a stopped orchestrator, a frozen supervisor, a network partition (a network namespace
whose link the test cuts), a frozen scheduler, a stage queued for resources no worker has, a
killed fork server, forged callers and frames.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import helpers.processes as processes
from conftest import Repo
from helpers.dask_cluster import (
    DaskCluster,
    Namespace,
    dask_env,
    first_stage_handle,
    group_gone,
    network_namespace,
    no_stage_left,  # noqa: F401 (an autouse fixture: pytest finds it imported here)
    parent_pid,
    patient_connect,  # noqa: F401 (an autouse fixture: pytest finds it imported here)
    remote_run,
    run_processes,
    running_cluster,
)

pytestmark = pytest.mark.dask

GRACE = {"kill_grace_seconds": 1}
#: Short link timeouts keep these tests quick (the default is 10 s).
QUICK_LINK = {**GRACE, "dask_link_timeout_seconds": 2}
#: A stage that exits 0 leaving a background job and a helper that left its session, whose
#: child stays a zombie in the stage's group (the helper never reaps it).
HELPERS_AND_A_ZOMBIE = "sh -c 'sleep 0.1 & exec setsid sleep 300' & sleep 300 & echo done"
#: The same, ignoring SIGTERM, and a helper in its own session that ignores it too.
STUBBORN_HELPERS = (
    "setsid sh -c \"trap '' TERM; sleep 300\" & "
    f"{HELPERS_AND_A_ZOMBIE}; trap '' TERM; sleep 300 & wait"
)


def beating(tmp_path: Path) -> str:
    """A stage whose first run writes the time to ``beat`` until it is ended, and whose second
    run writes the time it started to ``second`` and succeeds: ``beat`` older than ``second``
    proves the first run was over before the second began."""
    first, beat, second = tmp_path / "first", tmp_path / "beat", tmp_path / "second"
    return (
        f"if test -e {first}; then date +%s%N > {second}; exit 0; fi; touch {first}; "
        f"while :; do date +%s%N > {beat}.new && mv {beat}.new {beat}; sleep 0.05; done"
    )


def ran_one_after_the_other(tmp_path: Path) -> bool:
    beat = int((tmp_path / "beat").read_text())
    return beat < int((tmp_path / "second").read_text())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A scheduler and two workers (the second has a GPU), shared by the tests of this file."""
    with running_cluster(
        tmp_path_factory.mktemp("dask-failures"), (), ("--resources", "GPU=1")
    ) as running:
        yield running


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """A cluster of two workers this test may break (kill a worker)."""
    with running_cluster(tmp_path / "dask-own", (), ()) as running:
        yield running


@pytest.fixture
def lone_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """A cluster of one worker this test may break (kill it, freeze the scheduler)."""
    with running_cluster(tmp_path / "dask-lone", ()) as running:
        yield running


def finished(process: subprocess.Popen[str], repo: Repo) -> dict[str, Any]:
    """The manifest of the run ``process`` drove, once it exited."""
    stdout, stderr = process.communicate(timeout=90)
    assert "Traceback" not in stderr, stderr
    manifest: dict[str, Any] = repo.manifest(json.loads(stdout))
    return manifest


def supervisor_of(handle: dict[str, Any]) -> int:
    """The pid of a stage's supervisor, verified: a child of the fork server its worker runs."""
    supervisor = parent_pid(handle["pid"])
    assert parent_pid(parent_pid(supervisor)) == handle["worker_pid"]
    return supervisor


# --- 1. helpers, zombies and what a stage leaves behind ----------------------------------------


def test_stages_leaving_helpers_and_a_zombie_succeed_at_once_and_leave_nothing(
    repo: Repo, cluster: DaskCluster
) -> None:
    # Three on the same worker, then one more: a wedged worker would never run the last.
    on_gpu = {"command": HELPERS_AND_A_ZOMBIE, "timeoutSeconds": 60, "resources": {"GPU": 1}}
    stages = [{"id": f"helpers{n}", **on_gpu} for n in range(3)]
    last = {"id": "after", "command": "echo next", "resources": {"GPU": 1}}
    # A long grace: helpers that end on SIGTERM must not make their stage wait for it.
    repo.pipeline(*stages, last, settings={"kill_grace_seconds": 60})
    code, document = repo.start_json(env=dask_env(cluster))
    assert code == 0, document
    entries = repo.manifest(document)["commands"]
    assert [(e["status"], e["exit_code"], e["timed_out"]) for e in entries] == [
        ("succeeded", 0, False)
    ] * 4
    spans = [elapsed(e["started_at"], e["completed_at"]) for e in entries]
    assert max(spans) < 30, spans  # far below the grace period: the stages ended promptly
    assert run_processes(document["run_id"]) == {}


def elapsed(started_at: str, completed_at: str) -> float:
    """Seconds between two recorded times."""
    return (
        datetime.fromisoformat(completed_at) - datetime.fromisoformat(started_at)
    ).total_seconds()


@pytest.mark.parametrize("ending", ["timeout", "SIGINT"])
def test_stages_with_stubborn_helpers_that_time_out_or_are_interrupted_leave_nothing(
    repo: Repo, cluster: DaskCluster, ending: str
) -> None:
    timeout = {"timeoutSeconds": 1} if ending == "timeout" else {}
    repo.pipeline({"id": "stubborn", "command": STUBBORN_HELPERS, **timeout}, settings=GRACE)
    with remote_run(repo, dask_env(cluster)) as process:
        first_stage_handle(repo)
        if ending == "SIGINT":
            process.send_signal(signal.SIGINT)
        manifest = finished(process, repo)
    expected = "stage:stubborn:timeout" if ending == "timeout" else "signal:SIGINT"
    assert manifest["status_detail"] == expected
    assert run_processes(manifest["run_id"]) == {}  # ended before the run was recorded


# --- 2. stages never outlive their worker, and never run twice ---------------------------------


def test_kill_9_of_the_worker_process_group_ends_the_stage_before_its_retry(
    repo: Repo, own_cluster: DaskCluster, tmp_path: Path
) -> None:
    repo.pipeline({"id": "work", "command": beating(tmp_path), "retries": 1}, settings=GRACE)
    with remote_run(repo, dask_env(own_cluster)) as process:
        handle = first_stage_handle(repo)
        supervisor = supervisor_of(handle)
        worker = own_cluster.worker_of(handle)
        os.killpg(worker.pid, signal.SIGKILL)  # it leads its own group: started so by the test
        manifest = finished(process, repo)
    entry = manifest["commands"][0]
    assert (manifest["status"], entry["attempts"]) == ("succeeded", 2), entry
    assert entry["summary"].startswith("succeeded on attempt 2 of 2")
    assert ran_one_after_the_other(tmp_path)
    assert group_gone(handle["pgid"]) and not processes.alive(supervisor)


def test_a_worker_killed_while_the_orchestrator_is_stopped_leaves_nothing(
    repo: Repo, lone_cluster: DaskCluster
) -> None:
    # The stage fills the link while the orchestrator reads nothing; the link timeout is long,
    # so only the worker's death can end the stage in time.
    settings = {**GRACE, "dask_link_timeout_seconds": 60}
    repo.pipeline({"id": "loud", "command": "yes"}, settings=settings)
    with remote_run(repo, dask_env(lone_cluster)) as process:
        handle = first_stage_handle(repo)
        worker = lone_cluster.worker_of(handle)
        process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.5)  # the link is full by now: the supervisor waits to send
            worker.kill()
            worker.wait()
            processes.wait_for(lambda: group_gone(handle["pgid"]), 20, "the stage to end")
        finally:
            process.send_signal(signal.SIGCONT)
        manifest = finished(process, repo)
    assert manifest["status_detail"] == "stage:loud:worker-lost"


def test_a_stopped_orchestrator_loses_its_stage_within_the_link_timeout(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline({"id": "work", "command": "sleep 300"}, settings=QUICK_LINK)
    with remote_run(repo, dask_env(cluster)) as process:
        handle = first_stage_handle(repo)
        process.send_signal(signal.SIGSTOP)
        try:
            processes.wait_for(lambda: group_gone(handle["pgid"]), 20, "the stage to end")
        finally:
            process.send_signal(signal.SIGCONT)
        manifest = finished(process, repo)
    assert manifest["status_detail"] == "stage:work:worker-lost"
    assert "none of its processes was left on the worker" in manifest["commands"][0]["summary"]


def test_a_silent_supervisor_is_lost_and_its_stage_ended_through_the_worker_before_a_retry(
    repo: Repo, cluster: DaskCluster, tmp_path: Path
) -> None:
    repo.pipeline({"id": "work", "command": beating(tmp_path), "retries": 1}, settings=QUICK_LINK)
    with remote_run(repo, dask_env(cluster)) as process:
        handle = first_stage_handle(repo)
        supervisor = supervisor_of(handle)
        os.kill(supervisor, signal.SIGSTOP)  # verified above
        try:
            manifest = finished(process, repo)
        finally:
            os.kill(supervisor, signal.SIGCONT)
    entry = manifest["commands"][0]
    assert (manifest["status"], entry["attempts"]) == ("succeeded", 2), entry
    assert ran_one_after_the_other(tmp_path)
    processes.wait_for(lambda: not processes.alive(supervisor), 20, "the supervisor to go")


@pytest.fixture
def split_cluster(tmp_path: Path) -> Iterator[tuple[DaskCluster, Namespace]]:
    """A scheduler and a worker (resource ``SAFE``) here, and a worker (resource ``SPLIT``) in
    a network namespace whose link the test may cut."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("a network partition needs root, ip and tc (a network namespace)")
    with network_namespace() as space:
        running = DaskCluster(tmp_path / "dask-split", host=space.host_ip)
        (tmp_path / "dask-split").mkdir()
        try:
            running.start_scheduler()
            running.start_worker("--resources", "SAFE=1")
            inner = {"host": space.inner_ip, "prefix": space.inside()}
            running.start_worker("--resources", "SPLIT=1", **inner)  # type: ignore[arg-type]
            running.wait_for_workers(2)
            yield running, space
        finally:
            space.heal()
            running.stop()


def test_a_partitioned_stage_ends_on_its_worker_and_is_not_run_again_until_then(
    repo: Repo, split_cluster: tuple[DaskCluster, Namespace], tmp_path: Path
) -> None:
    cluster, space = split_cluster
    command = beating(tmp_path)
    repo.pipeline(
        {"id": "work", "command": command, "resources": {"SPLIT": 1}, "retries": 1},
        settings=QUICK_LINK,
    )
    with remote_run(repo, dask_env(cluster)) as process:
        handle = first_stage_handle(repo)
        space.cut()
        manifest = finished(process, repo)
    entry = manifest["commands"][0]
    assert (manifest["status_detail"], entry["attempts"]) == ("stage:work:worker-lost", 1)
    assert "may still run until" in entry["summary"]  # not retried: not known to be gone
    assert entry["handle"]["remote_end"] == "due"
    # Resumed at once, on the worker that can be reached: it waits for the first to end.
    repo.pipeline({"id": "work", "command": command, "resources": {"SAFE": 1}}, settings=QUICK_LINK)
    resumed = repo.cli("resume", manifest["run_id"], "--format", "json", env=dask_env(cluster))
    assert resumed.returncode == 0, resumed.stderr
    assert f"check process group {handle['pgid']}" in resumed.stderr
    assert ran_one_after_the_other(tmp_path)
    ends_by = datetime.fromisoformat(entry["handle"]["remote_ends_by"].replace("Z", "+00:00"))
    assert int((tmp_path / "second").read_text()) / 1e9 >= ends_by.timestamp() - 1


# --- 3. timeouts that fire: queued, frozen scheduler --------------------------------------------


def test_a_stage_queued_for_resources_no_worker_has_times_out(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline(
        {"id": "tpu", "command": "echo never", "resources": {"TPU": 1}, "timeoutSeconds": 1}
    )
    code, document = repo.start_json(env=dask_env(cluster))
    assert code == 1, document
    manifest = repo.manifest(document)
    entry = manifest["commands"][0]
    assert manifest["status_detail"] == "stage:tpu:timeout"
    assert (entry["status"], entry["exit_code"], entry["timed_out"]) == ("failed", None, True)
    assert (repo.root / entry["log_path"]).read_bytes() == b""


def test_a_frozen_scheduler_fails_the_next_stage_within_the_link_timeout(
    repo: Repo, lone_cluster: DaskCluster
) -> None:
    repo.pipeline(
        {"id": "running", "command": "sleep 2; echo done"},
        {"id": "next", "command": "echo never"},
        settings=QUICK_LINK,
    )
    assert lone_cluster.scheduler is not None
    with remote_run(repo, dask_env(lone_cluster)) as process:
        first_stage_handle(repo)
        lone_cluster.scheduler.send_signal(signal.SIGSTOP)
        try:
            manifest = finished(process, repo)
        finally:
            lone_cluster.scheduler.send_signal(signal.SIGCONT)
    assert manifest["status_detail"] == "stage:next:scheduler-lost"
    statuses = [(entry["status"], entry["exit_code"]) for entry in manifest["commands"]]
    assert statuses == [("succeeded", 0), ("failed", None)]  # the first needs no scheduler


# --- 6. honest records: the worker-side machinery dies, not the stage -------------------------


def test_a_killed_fork_server_leaves_its_running_stage_to_succeed(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline(
        {"id": "work", "command": "sleep 1; echo survived"}, {"id": "next", "command": "true"}
    )
    with remote_run(repo, dask_env(cluster)) as process:
        handle = first_stage_handle(repo)
        fork_server = parent_pid(supervisor_of(handle))
        os.kill(fork_server, signal.SIGKILL)  # as the OOM killer would; verified above
        manifest = finished(process, repo)
    assert manifest["status"] == "succeeded"
    assert (repo.root / manifest["commands"][0]["log_path"]).read_text() == "survived\n"


def test_a_supervisor_sent_sigterm_is_an_infrastructure_loss_not_a_failed_command(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline({"id": "work", "command": "sleep 300"}, settings=GRACE)
    with remote_run(repo, dask_env(cluster)) as process:
        handle = first_stage_handle(repo)
        os.kill(supervisor_of(handle), signal.SIGTERM)  # verified
        manifest = finished(process, repo)
    entry = manifest["commands"][0]
    assert manifest["status_detail"] == "stage:work:worker-lost"
    assert "was sent SIGTERM and ended the stage" in entry["summary"]
    error = json.loads((repo.root / entry["error_file"]).read_text())
    assert error["reason"] == "worker-lost"


# --- 5. the task spec holds no secret; a forged caller gets nothing ---------------------------


def test_task_specs_hold_no_secret_and_forged_callers_are_turned_away(
    repo: Repo, cluster: DaskCluster
) -> None:
    import distributed

    secrets = {name: uuid.uuid4().hex for name in ("env", "stage", "command")}
    repo.pipeline(
        {
            "id": "guarded",
            "command": f"echo {secrets['command']}",
            "env": {"STAGE_SECRET": secrets["stage"]},
            "resources": {"FORGE": 1},  # no worker has it: the task waits, its door open
        }
    )
    env = {**dask_env(cluster), "ORCHESTRATOR_SECRET": secrets["env"]}
    with (
        remote_run(repo, env) as process,
        distributed.Client(cluster.address, set_as_default=False) as spy,
    ):

        def queued_stage(dask_scheduler: Any) -> list[Any]:
            return [
                ts.run_spec.args
                for key, ts in dask_scheduler.tasks.items()
                if str(key).startswith("codex-stage-guarded-")
            ]

        [spec] = processes.wait_for(lambda: spy.run_on_scheduler(queued_stage), 30, "the task")
        assert not any(secret in repr(spec) for secret in secrets.values())
        callback, session, stage = spec[2:5]
        workers = list(spy.scheduler_info()["workers"])
        assert not admitted(callback, session, stage, workers[0])  # a real worker, no key
        assert not admitted(callback, session, stage, "tcp://127.0.0.1:9")  # not a worker
        with socket.create_connection(callback):  # a caller that says nothing ...
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)  # ... does not hold up the end
            manifest = finished(process, repo)
        assert time.monotonic() - started < 8  # was 10 s and more
    entry = manifest["commands"][0]
    assert manifest["status_detail"] == "signal:SIGTERM"
    assert (entry["status"], entry["exit_code"], entry.get("handle")) == ("failed", None, None)


def admitted(callback: tuple[str, int], session: bytes, stage: bytes, worker: str) -> bool:
    """Whether the stage's door lets in a caller that knows what the task spec says (and which
    worker it claims to be) but not the worker's key."""
    from codex_orchestrator.executors.dask.worker.remote import ACCEPTED, HELLO, HELLO_FIELDS, KEYED

    with socket.create_connection(callback, timeout=20) as caller:
        address = worker.encode()
        hello = HELLO_FIELDS.pack(session, stage, os.urandom(16), True, len(address))
        caller.sendall(HELLO + hello + address + os.urandom(32))  # a proof without the key
        try:
            answer = caller.recv(1)
            if answer == KEYED:  # the orchestrator gave the real worker its key meanwhile
                caller.sendall(os.urandom(32))
                answer = caller.recv(1)
        except OSError:
            return False
        return answer == ACCEPTED


def test_a_report_with_a_wrong_signature_or_a_bad_field_is_refused() -> None:
    from codex_orchestrator.executors.dask.link import ProtocolError, signed_fields
    from codex_orchestrator.executors.dask.worker.supervisor import FRAME_EXIT, mac

    key = os.urandom(32)

    def signed(fields: object, with_key: bytes = key) -> bytes:
        body = json.dumps(fields).encode()
        return body + mac(with_key, FRAME_EXIT, body)

    good = {"code": 0, "killed": False, "lost": None, "duration": 1.5}
    assert signed_fields(FRAME_EXIT, signed(good), key) == good
    bad_fields: list[object] = [
        {**good, "duration": float("nan")},
        {**good, "duration": float("inf")},
        {**good, "duration": -1},
        {**good, "code": 256},
        {**good, "code": True},
        {**good, "lost": "anything"},
        {**good, "extra": 1},
        {key: value for key, value in good.items() if key != "code"},
        [good],
    ]
    for fields in bad_fields:
        with pytest.raises(ProtocolError):
            signed_fields(FRAME_EXIT, signed(fields), key)
    with pytest.raises(ProtocolError):
        signed_fields(FRAME_EXIT, signed(good, os.urandom(32)), key)
