"""The Dask executor against a real cluster: ``dask scheduler`` and ``dask worker`` processes.

Local runs never import Dask; remote stages leave records and logs like local ones; cancel,
timeouts, a killed worker and a dead scheduler leave no process behind and honest records.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SRC, Repo
from helpers.cached_repo import Cached, reasons
from helpers.dask_cluster import (
    DASK,
    PATIENT_CONNECT_SECONDS,
    DaskCluster,
    dask_env,
    first_stage_handle,
    group_gone,
    no_stage_left,  # noqa: F401 (an autouse fixture: pytest finds it imported here)
    parent_pid,
    patient_connect,  # noqa: F401 (an autouse fixture: pytest finds it imported here)
    remote_run,
    run_processes,
    running_cluster,
    start_cluster,
)
from helpers.processes import wait_for

pytestmark = pytest.mark.dask

TWO_WORKERS = ((), ("--resources", "GPU=1"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """Scheduler plus two workers (the second has a GPU), shared by the tests of this file."""
    with running_cluster(tmp_path_factory.mktemp("dask"), *TWO_WORKERS) as running:
        yield running


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """A cluster this test may break (kill a worker, kill the scheduler)."""
    with running_cluster(tmp_path / "dask-own", *TWO_WORKERS) as running:
        yield running


# --- selection and bad input -----------------------------------------------------------------


def test_local_start_and_plan_never_import_dask(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    code = (
        "import sys\nfrom codex_orchestrator.cli import main\n"
        "assert main(['plan']) == 0\nassert main(['start']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo.root, env=repo.env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--executor", "ray"],
            {},
            "--executor: unknown executor 'ray'; choose one of local, dask",
        ),
        ([], {"CODEX_ORCHESTRATOR_EXECUTOR": "k8s"}, "unknown executor 'k8s'"),
        (["--executor", "dask"], {}, "needs a scheduler address: pass --scheduler"),
        (["--executor", "dask", "--scheduler", "garbage"], {}, "not a Dask scheduler address"),
        (["--executor", "dask", "--scheduler", "tcp://h:99999"], {}, "tcp://HOST:PORT"),
        (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"], {}, "cannot reach"),
        (["--scheduler", "tcp://127.0.0.1:1"], {}, "cannot reach"),  # it implies dask
        (
            ["--executor", "local", "--scheduler", "tcp://127.0.0.1:1"],
            {},
            "--scheduler tcp://127.0.0.1:1 names a Dask scheduler, but --executor is 'local'",
        ),
        (["--scheduler", "tls://127.0.0.1:1"], {}, "the TLS settings are missing"),
    ],
)
def test_bad_executor_input_exits_2_without_a_run(
    repo: Repo, args: list[str], env: dict[str, str], message: str
) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    result = repo.cli("start", *args, "--format", "json", env=env)
    assert result.returncode == 2, result.stderr
    assert message in json.loads(result.stdout)["error"]
    assert "Traceback" not in result.stderr
    assert not (repo.root / ".runs").exists()


@pytest.mark.parametrize(
    ("stage_extra", "settings", "message"),
    [
        ({"resources": {"GPU": 0}}, {}, "stages[0].resources.GPU: must be greater than 0"),
        ({"resources": ["GPU"]}, {}, "stages[0].resources: expected an object"),
        ({}, {"executor": 5}, "settings.executor: expected a string"),
        ({}, {"dask_scheduler": ""}, "settings.dask_scheduler"),
        ({}, {"dask_pass_env": ["A=B"]}, "settings.dask_pass_env[0]: 'A=B' is not an environ"),
        ({}, {"dask_link_timeout_seconds": 0.5}, "settings.dask_link_timeout_seconds"),
    ],
)
def test_bad_executor_config_exits_2(
    repo: Repo, stage_extra: dict[str, Any], settings: dict[str, Any], message: str
) -> None:
    repo.pipeline({"id": "one", "command": "true", **stage_extra}, settings=settings)
    result = repo.cli("start")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_dask_without_the_extra_exits_2_with_the_install_command(
    repo: Repo, tmp_path: Path
) -> None:
    # A real interpreter without Dask: a bare virtual environment of the same Python.
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    repo.pipeline({"id": "one", "command": "true"})
    command = ["start", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:8786"]
    result = subprocess.run(
        [str(bare / "bin" / "python"), "-m", "codex_orchestrator", *command],
        cwd=repo.root,
        env={**repo.env, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'codex-pipeline-orchestrator[dask]'" in result.stderr
    assert not (repo.root / ".runs").exists()


# --- records like local ones -----------------------------------------------------------------

#: Fields that may differ between a local and a remote run of the same pipeline.
HOST_PID_TIMING = frozenset(
    {
        "run_id",
        "executor",
        "host",
        "worker",
        "scheduler",
        "handle",
        "pid",
        "pgid",
        "pid_start_ticks",
        "worker_pid",
        "orchestrator_pid",
        "orchestrator_start_ticks",
        "started_at",
        "completed_at",
        "updated_at",
        "heartbeat_at",
        "created_at",
        "duration_seconds",
        "resume_token",
        "env_marker",  # the local executor's way to find escaped processes on this machine
        "stage_mark",  # the Dask executor's mark of a stage's processes on its worker
    }
)


def comparable(value: Any, run_id: str) -> Any:
    """``value`` without host, pid and timing fields, with the run id replaced."""
    if isinstance(value, dict):
        return {k: comparable(v, run_id) for k, v in value.items() if k not in HOST_PID_TIMING}
    if isinstance(value, list):
        return [comparable(item, run_id) for item in value]
    if isinstance(value, str):
        return value.replace(run_id, "RUN")
    return value


RECORD_PIPELINE = (
    {"id": "text", "command": "echo out; echo err >&2; printf 'no newline'"},
    {"id": "binary", "command": "printf '\\000\\377\\033[31m\\r\\n'; head -c 300000 big.bin"},
    {"id": "where", "command": 'pwd; echo "$GREETING"', "cwd": "sub", "env": {"GREETING": "hi"}},
    {"id": "flaky", "command": "echo oops >&2; exit 3", "allowFailure": True},
    {"id": "fds", "command": "ls /proc/$$/fd"},  # the stage holds no descriptor of ours
    {"id": "last", "command": "seq 1 20000"},
)


def test_same_pipeline_local_and_on_dask_gives_the_same_records(
    repo: Repo, cluster: DaskCluster
) -> None:
    (repo.root / "sub").mkdir()
    (repo.root / "big.bin").write_bytes(os.urandom(300_000))
    repo.pipeline(*RECORD_PIPELINE)
    runs = []
    for env in ({}, dask_env(cluster)):
        code, document = repo.start_json(env=env)
        assert code == 0, document
        runs.append((document, repo.manifest(document)))
    (local_doc, local), (remote_doc, remote) = runs
    assert (local["executor"], remote["executor"]) == ("local", "dask")
    assert all(entry["host"] == os.uname().nodename for entry in remote["commands"])
    assert all(entry["handle"]["kind"] == "dask" for entry in remote["commands"])
    assert comparable(local, local["run_id"]) == comparable(remote, remote["run_id"])
    local_dir, remote_dir = (repo.root / doc["artifact_root"] for doc in (local_doc, remote_doc))
    logs = sorted(path.name for path in (local_dir / "commands").iterdir())
    assert logs == sorted(path.name for path in (remote_dir / "commands").iterdir())
    for name in logs:
        local_bytes = (local_dir / "commands" / name).read_bytes()
        assert local_bytes == (remote_dir / "commands" / name).read_bytes(), name
    errors = [json.loads(path.read_text()) for path in sorted(local_dir.glob("errors/*.json"))]
    remote_errors = [json.loads(p.read_text()) for p in sorted(remote_dir.glob("errors/*.json"))]
    assert len(errors) == 1
    assert comparable(errors, local["run_id"]) == comparable(remote_errors, remote["run_id"])


def test_fifty_megabytes_of_binary_output_stream_back_intact(
    repo: Repo, cluster: DaskCluster
) -> None:
    payload = os.urandom(50 * 1024 * 1024)
    (repo.root / "blob.bin").write_bytes(payload)
    repo.pipeline({"id": "blob", "command": "cat blob.bin; head -c 1000000 blob.bin >&2"})
    code, document = repo.start_json(env=dask_env(cluster))
    assert code == 0, document
    entry = repo.manifest(document)["commands"][0]
    stdout = (repo.root / entry["log_path"]).read_bytes()
    assert hashlib.sha256(stdout).digest() == hashlib.sha256(payload).digest()
    assert (repo.root / entry["stderr_log_path"]).read_bytes() == payload[:1_000_000]
    assert (entry["stdout_bytes"], entry["stderr_bytes"]) == (len(payload), 1_000_000)


def test_resources_route_stages_to_the_worker_that_has_them(
    repo: Repo, cluster: DaskCluster
) -> None:
    gpu_stages = [{"id": f"gpu{n}", "command": "true", "resources": {"GPU": 1}} for n in range(3)]
    # Chosen in the config this time, not the environment.
    repo.pipeline(*gpu_stages, settings={"executor": "dask", "dask_scheduler": cluster.address})
    code, document = repo.start_json()
    assert code == 0, document
    workers = {entry["worker"] for entry in repo.manifest(document)["commands"]}
    assert workers == {cluster.worker_address(1)}


def test_a_graph_of_eight_stages_spreads_over_both_workers(
    repo: Repo, cluster: DaskCluster
) -> None:
    stages = [{"id": f"s{n}", "command": "sleep 0.5", "needs": []} for n in range(8)]
    repo.write_config(
        {
            "defaultPipeline": "wide",
            "pipelines": [{"id": "wide", "maxParallel": 8, "stages": stages}],
        }
    )
    code, document = repo.start_json(env=dask_env(cluster))
    assert code == 0, document
    entries = repo.manifest(document)["commands"]
    assert {entry["worker"] for entry in entries} == {
        cluster.worker_address(0),
        cluster.worker_address(1),
    }
    spans = sorted((entry["started_at"], entry["completed_at"]) for entry in entries)
    overlapping = [a for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert overlapping  # stages ran at the same time, one on each worker


# --- teardown: cancel, timeout, lost worker, lost scheduler -----------------------------------

STUBBORN = "trap '' TERM; sleep 60 & sleep 60; wait"


def test_cancel_during_a_remote_stage_leaves_no_process_on_the_worker(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline(
        {"id": "long", "command": STUBBORN},
        {"id": "never", "command": "true"},
        settings={"kill_grace_seconds": 1},
    )
    with remote_run(repo, dask_env(cluster)) as process:
        handle = first_stage_handle(repo)
        assert not group_gone(handle["pgid"])
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 143
    document = json.loads(stdout)
    manifest = repo.manifest(document)
    assert manifest["status_detail"] == "signal:SIGTERM"
    assert [entry["status"] for entry in manifest["commands"]] == ["failed", "pending"]
    wait_for(lambda: group_gone(handle["pgid"]), timeout=10, what="the stage group to end")


def test_timeout_ends_the_remote_group(repo: Repo, cluster: DaskCluster) -> None:
    repo.pipeline(
        {"id": "slow", "command": STUBBORN, "timeoutSeconds": 1},
        settings={"kill_grace_seconds": 0.5},
    )
    code, document = repo.start_json(env=dask_env(cluster))
    assert code == 1
    manifest = repo.manifest(document)
    assert manifest["status_detail"] == "stage:slow:timeout"
    assert group_gone(manifest["commands"][0]["pgid"])


def test_killed_worker_fails_the_stage_once_then_resume_succeeds(
    repo: Repo, own_cluster: DaskCluster
) -> None:
    marker = repo.root / "attempts.txt"
    repo.pipeline({"id": "work", "command": f"echo ran >> {marker}; sleep 60 & wait"})
    env = dask_env(own_cluster)
    with remote_run(repo, env) as process:
        handle = first_stage_handle(repo)
        worker_index, worker = next(
            (n, w) for n, w in enumerate(own_cluster.workers) if w.pid == handle["worker_pid"]
        )
        started = time.monotonic()
        worker.kill()  # SIGKILL, by the pid this test started
        worker.wait()
        stdout, _ = process.communicate(timeout=60)
        elapsed = time.monotonic() - started
    assert process.returncode == 1
    manifest = repo.manifest(json.loads(stdout))
    assert manifest["status_detail"] == "stage:work:worker-lost", json.dumps(manifest["commands"])
    assert elapsed < 30  # within the stale threshold (default 30 s)
    wait_for(lambda: group_gone(handle["pgid"]), timeout=10, what="the orphaned group to end")
    time.sleep(1)  # Dask re-runs tasks of a lost worker: the stage must not start again
    assert marker.read_text() == "ran\n"
    repo.pipeline({"id": "work", "command": f"echo ran >> {marker}"})
    # No flag and no environment this time: resume makes the choice the run recorded.
    result = repo.cli("resume", manifest["run_id"], "--format", "json")
    assert result.returncode == 0, result.stderr
    resumed = repo.manifest(json.loads(result.stdout))
    assert (resumed["status"], resumed["executor"]) == ("succeeded", "dask")
    assert resumed["commands"][0]["worker"] == own_cluster.worker_address(1 - worker_index)
    assert marker.read_text() == "ran\nran\n"


def test_scheduler_death_fails_the_run_and_says_so(repo: Repo, own_cluster: DaskCluster) -> None:
    repo.pipeline({"id": "work", "command": "sleep 60 & wait"}, {"id": "next", "command": "true"})
    with remote_run(repo, dask_env(own_cluster)) as process:
        handle = first_stage_handle(repo)
        assert own_cluster.scheduler is not None
        own_cluster.scheduler.kill()
        own_cluster.scheduler.wait()
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Traceback" not in stderr and "distributed." not in stderr, stderr  # one line
    manifest = repo.manifest(json.loads(stdout))
    assert manifest["status"] == "failed"
    assert manifest["status_detail"] == "stage:work:scheduler-lost"
    assert "scheduler" in manifest["commands"][0]["summary"]
    assert [entry["status"] for entry in manifest["commands"]] == ["failed", "pending"]
    wait_for(lambda: group_gone(handle["pgid"]), timeout=10, what="the stage group to end")


def test_vanished_supervisor_is_lost_and_its_group_reaped_on_the_worker(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline({"id": "work", "command": "sleep 60 & wait"}, settings={"kill_grace_seconds": 1})
    with remote_run(repo, dask_env(cluster)) as process:
        handle = first_stage_handle(repo)
        supervisor = parent_pid(handle["pid"])
        fork_server = parent_pid(supervisor)
        assert parent_pid(fork_server) == handle["worker_pid"]  # verified before signalling
        os.kill(supervisor, signal.SIGKILL)
        stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert repo.manifest(json.loads(stdout))["status_detail"] == "stage:work:worker-lost"
    assert group_gone(handle["pgid"])  # ended on the worker before the run was recorded


# Each stage prints the pid of its supervisor's parent: the worker's fork server.
FORK_SERVER_OF_STAGE = "awk '{print $4}' /proc/$PPID/stat"


def fork_servers(repo: Repo, document: dict[str, Any]) -> set[tuple[int, int]]:
    """(fork server pid, worker pid) of each stage of a finished run."""
    found = set()
    for entry in repo.manifest(document)["commands"]:
        server = int((repo.root / entry["log_path"]).read_text().split()[-1])
        found.add((server, entry["handle"]["worker_pid"]))
    return found


def test_one_fork_server_per_worker_runs_every_stage_and_is_replaced_when_killed(
    repo: Repo, cluster: DaskCluster
) -> None:
    on_gpu_worker = {"command": FORK_SERVER_OF_STAGE, "resources": {"GPU": 1}}
    repo.pipeline(*({"id": f"s{n}", **on_gpu_worker} for n in range(3)))
    code, document = repo.start_json(env=dask_env(cluster))
    assert code == 0, document
    [(server, worker)] = fork_servers(repo, document)  # every stage: one server, long-lived
    assert parent_pid(server) == worker
    # Supervisors are reaped as they end: no zombie stays behind on the worker.
    children = Path(f"/proc/{server}/task/{server}/children")
    wait_for(lambda: children.read_text().split() == [], timeout=5, what="supervisors to go")
    os.kill(server, signal.SIGKILL)  # verified above: the recorded worker's child
    code, document = repo.start_json(env=dask_env(cluster))
    assert code == 0, document
    [(replacement, same_worker)] = fork_servers(repo, document)
    assert (replacement != server, same_worker) == (True, worker)
    assert parent_pid(replacement) == worker


def test_stages_at_once_on_one_worker_share_its_fork_server_and_keep_apart(
    repo: Repo, tmp_path: Path
) -> None:
    threaded = start_cluster(tmp_path / "dask-threads", ("--nthreads", "4"))
    try:
        stages = [
            {
                "id": f"s{n}",
                "command": f"for i in $(seq 1 2000); do echo s{n}-$i; done; sleep 0.5; "
                + FORK_SERVER_OF_STAGE,
                "needs": [],
            }
            for n in range(4)
        ]
        repo.write_config(
            {
                "defaultPipeline": "wide",
                "pipelines": [{"id": "wide", "maxParallel": 4, "stages": stages}],
            }
        )
        code, document = repo.start_json(env=dask_env(threaded))
    finally:
        threaded.stop()
    assert code == 0, document
    found = fork_servers(repo, document)
    assert len(found) == 1, found  # one worker, one server for all four
    [(server, worker)] = found
    assert server != worker
    entries = repo.manifest(document)["commands"]
    for entry in entries:  # each stage's output, whole and only its own
        lines = (repo.root / entry["log_path"]).read_text().split()
        assert lines[:-1] == [f"{entry['id']}-{i}" for i in range(1, 2001)]
    spans = sorted((entry["started_at"], entry["completed_at"]) for entry in entries)
    assert all(b[0] < a[1] for a, b in itertools.pairwise(spans))  # they ran at the same time


def test_sigkilled_orchestrator_leaves_no_remote_process_and_resumes(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline({"id": "work", "command": "sleep 60 & wait"}, settings={"kill_grace_seconds": 1})
    env = dask_env(cluster)
    with remote_run(repo, env) as process:
        handle = first_stage_handle(repo)
        process.kill()
        process.wait()
    wait_for(lambda: group_gone(handle["pgid"]), timeout=10, what="the orphaned group to end")
    run_id = next((repo.root / ".runs").glob("*/cli/*")).name
    repo.pipeline({"id": "work", "command": "true"})
    result = repo.cli("resume", run_id, "--force", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert repo.manifest(json.loads(result.stdout))["status"] == "succeeded"


def test_worker_root_maps_the_repository_path_on_workers(
    repo: Repo, cluster: DaskCluster, tmp_path: Path
) -> None:
    mirror = tmp_path / "worker-view"
    (mirror / "sub").mkdir(parents=True)
    (mirror / "sub" / "where.txt").write_text("worker copy\n")
    (repo.root / "sub").mkdir()
    (repo.root / "sub" / "where.txt").write_text("orchestrator copy\n")
    repo.pipeline(
        {"id": "look", "command": "cat where.txt; pwd -P", "cwd": "sub"},
        settings={"worker_root": str(mirror)},
    )
    code, document = repo.start_json(env=dask_env(cluster))
    assert code == 0, document
    entry = repo.manifest(document)["commands"][0]
    output = (repo.root / entry["log_path"]).read_text()
    assert output == f"worker copy\n{(mirror / 'sub').resolve()}\n"


def test_a_cache_hit_sends_nothing_to_the_cluster(cached: Cached, cluster: DaskCluster) -> None:
    import distributed

    cached.repo.pipeline(cached.stage("remotecached"))
    env = dask_env(cluster)

    def stage_tasks(dask_scheduler: Any) -> set[str]:
        """The stage's tasks in the scheduler's log (its last thousand transitions: far more
        than this test makes)."""
        keys = {str(transition[0]) for transition in dask_scheduler.transition_log}
        return {key for key in keys if key.startswith("codex-stage-remotecached-")}

    with distributed.Client(cluster.address, set_as_default=False) as spy:
        ran = cached.start(env=env)
        sent = spy.run_on_scheduler(stage_tasks)
        served = cached.start(env=env)
        assert spy.run_on_scheduler(stage_tasks) == sent  # no task reached the scheduler
    assert len(sent) == 1
    assert ran["commands"][0]["worker"] in {cluster.worker_address(n) for n in (0, 1)}
    assert cached.ran() == ["remotecached"]
    assert reasons(served)["remotecached"] == ("hit", None)
    assert served["commands"][0].get("worker") is None
    assert (cached.root / served["commands"][0]["log_path"]).read_text() == "out-remotecached\n"


def test_a_remote_stage_gets_the_runs_variables_the_passed_ones_and_the_workers_paths(
    repo: Repo, cluster: DaskCluster, tmp_path: Path
) -> None:
    mirror = tmp_path / "worker-view"
    mirror.mkdir()
    names = ("ROOT", "RUN_DIR", "MANIFEST_PATH", "PYTHON")
    shown = "|".join(f"$CODEX_ORCHESTRATOR_{name}" for name in names)
    repo.pipeline(
        {
            "id": "env",
            "command": f'echo "{shown}|${{PASSED-unset}}|${{KEPT-unset}}|$OWN"',
            "env": {"OWN": "the stage's own"},
        },
        settings={"worker_root": str(mirror), "dask_pass_env": ["PASSED"]},
    )
    env = {**dask_env(cluster), "PASSED": "passed on", "KEPT": "the orchestrator's secret"}
    code, document = repo.start_json(env=env)
    assert code == 0, document
    entry = repo.manifest(document)["commands"][0]
    root, run_dir, manifest, python, passed, kept, own = (
        (repo.root / entry["log_path"]).read_text().strip().split("|")
    )
    assert root == str(mirror)
    assert run_dir == str(mirror / document["artifact_root"])
    assert manifest == str(mirror / document["manifest"])
    assert python == DASK.read_text().splitlines()[0].removeprefix("#!")  # the worker's
    assert (passed, kept, own) == ("passed on", "unset", "the stage's own")


def test_relative_worker_root_is_refused(repo: Repo, cluster: DaskCluster) -> None:
    repo.pipeline({"id": "one", "command": "true"}, settings={"worker_root": "relative/path"})
    result = repo.cli("start", env=dask_env(cluster))
    assert result.returncode == 2
    assert "settings.worker_root: 'relative/path' is not an absolute path" in result.stderr


def test_reap_ends_a_verified_group_on_its_worker_and_refuses_a_tampered_one(
    repo: Repo, cluster: DaskCluster
) -> None:
    from codex_orchestrator.executors.dask.client import DaskConfig, WorkerMapping, connect
    from codex_orchestrator.util.procfs import process_start_ticks

    leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)
    mapping = WorkerMapping(repo.root, repo.root)
    executor = connect(
        DaskConfig(cluster.address, "test", mapping, 1.0, 10.0, PATIENT_CONNECT_SECONDS)
    )
    try:
        ticks = process_start_ticks(leftover.pid)
        assert ticks is not None
        handle = {
            "kind": "dask",
            "host": os.uname().nodename,
            "worker": cluster.worker_address(0),
            "pgid": leftover.pid,
            "pid_start_ticks": ticks,
        }
        for tampered in (
            {"pid_start_ticks": ticks - 1},
            {"pgid": 1},
            {"pgid": True},
            {"host": "x"},
        ):
            assert not executor.reap({**handle, **tampered}, 1.0), tampered
            assert leftover.poll() is None
        assert not executor.reap({**handle, "worker": "tcp://127.0.0.1:1"}, 1.0)
        # A handle of an earlier version: the start time under its old name, still read.
        old_format = {key: value for key, value in handle.items() if key != "pid_start_ticks"}
        assert executor.reap({**old_format, "start_ticks": ticks}, 1.0)
        assert leftover.wait(timeout=10) == -signal.SIGTERM
    finally:
        executor.close()
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_cancel_while_queued_for_missing_resources_ends_at_once(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline({"id": "tpu", "command": "echo never", "resources": {"TPU": 1}})
    with remote_run(repo, dask_env(cluster)) as process:
        wait_for(
            lambda: list((repo.root / ".runs").glob("*/cli/*/commands/*.stdout.log")),
            what="the stage to be queued",
        )
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "no Dask worker has TPU=1 yet" in stderr
    entry = repo.manifest(json.loads(stdout))["commands"][0]
    assert (entry["status"], entry["exit_code"]) == ("failed", None)
    assert (repo.root / entry["log_path"]).read_bytes() == b""


def test_a_process_that_left_the_stage_group_ends_with_the_remote_stage(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline(
        {"id": "daemon", "command": "setsid sh -c 'sleep 60' & echo started"},
        settings={"kill_grace_seconds": 1},
    )
    code, document = repo.start_json(env=dask_env(cluster))
    assert code == 0, document
    assert run_processes(document["run_id"]) == {}


def test_resuming_a_dead_local_run_on_dask_ends_its_local_leftovers(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline({"id": "work", "command": "sleep 60 & wait"}, settings={"kill_grace_seconds": 1})
    with remote_run(repo, {}) as process:  # a local run this time
        handle = first_stage_handle(repo)
        assert handle["kind"] == "local"
        process.kill()
        process.wait()
    assert not group_gone(handle["pgid"])  # a local stage outlives a SIGKILLed orchestrator
    run_id = next((repo.root / ".runs").glob("*/cli/*")).name
    repo.pipeline({"id": "work", "command": "true"})
    result = repo.cli("resume", run_id, "--force", "--format", "json", env=dask_env(cluster))
    assert result.returncode == 0, result.stderr
    assert group_gone(handle["pgid"])
    resumed = repo.manifest(json.loads(result.stdout))
    assert (resumed["executor"], resumed["commands"][0]["handle"]["kind"]) == ("dask", "dask")
