"""Fault injection with real processes and signals: teardown, crashes, heartbeat and output."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.engine.recovery import recorded_handles
from conftest import Repo
from helpers.processes import alive, wait_for
from helpers.runctl import kill_run_groups

FAST = {"CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS": "0.1"}
# A stage that starts two helpers (one ignores SIGTERM), records every pid, then waits.
STUBBORN_STAGE = (
    "echo $$ > pids; sleep 300 & echo $! >> pids; "
    "sh -c 'trap \"\" TERM; echo $$ >> pids; while :; do sleep 1; done' & "
    "wait"
)


def _pids(repo: Repo) -> list[int]:
    path = repo.root / "pids"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _only_run_manifest(repo: Repo, task: str = "default") -> dict[str, Any]:
    [path] = (repo.root / ".runs" / task / "cli").glob("*/manifest.json")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _recorded_handles(repo: Repo) -> list[Any]:
    [path] = (repo.root / ".runs" / "default" / "cli").glob("*/manifest.json")
    return recorded_handles(path.parent, json.loads(path.read_text())["commands"])


@pytest.mark.parametrize(
    ("sig", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")]
)
@pytest.mark.slow
def test_signal_cancels_run_and_ends_every_stage_process(
    repo: Repo, sig: int, code: int, name: str
) -> None:
    repo.pipeline(
        {"id": "long", "command": STUBBORN_STAGE},
        {"id": "later", "command": "true"},
        settings={"kill_grace_seconds": 1},
    )
    proc = repo.spawn("start", "--format", "json", env=FAST)
    wait_for(lambda: len(_pids(repo)) == 3, what="stage helpers")
    started = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    teardown = time.monotonic() - started
    assert proc.returncode == code, stderr
    assert teardown < 5
    doc = json.loads(stdout)
    manifest = repo.manifest(doc)
    assert manifest["status"] == "cancelled" and manifest["status_detail"] == f"signal:{name}"
    assert [c["status"] for c in manifest["commands"]] == ["failed", "pending"]
    assert manifest["metrics_recorded"] is True
    state = json.loads((repo.root / "out/default/state.json").read_text())
    assert [r["status"] for r in state["runs"]] == ["cancelled"]
    assert not [pid for pid in _pids(repo) if alive(pid)]


@pytest.mark.slow
def test_second_signal_kills_at_once(repo: Repo) -> None:
    repo.pipeline({"id": "long", "command": STUBBORN_STAGE}, settings={"kill_grace_seconds": 30})
    proc = repo.spawn("start", env=FAST)
    wait_for(lambda: len(_pids(repo)) == 3, what="stage helpers")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert proc.returncode == 143
    assert not [pid for pid in _pids(repo) if alive(pid)]


@pytest.mark.slow
def test_timeout_tears_down_stage(repo: Repo) -> None:
    repo.pipeline(
        {"id": "slow", "command": STUBBORN_STAGE, "timeoutSeconds": 1},
        {"id": "later", "command": "true"},
        settings={"kill_grace_seconds": 0.5},
    )
    result = repo.cli("start", "--format", "json", env=FAST)
    assert result.returncode == 1
    manifest = repo.manifest(json.loads(result.stdout))
    assert manifest["status"] == "failed" and manifest["status_detail"] == "stage:slow:timeout"
    slow = manifest["commands"][0]
    assert slow["status"] == "failed" and slow["timed_out"] is True
    assert json.loads((repo.root / slow["error_file"]).read_text())["reason"] == "command-timeout"
    assert not [pid for pid in _pids(repo) if alive(pid)]


def test_helper_left_by_a_stage_ends_with_the_run(repo: Repo) -> None:
    repo.pipeline(
        {"id": "helper", "command": "sleep 300 > /dev/null 2>&1 & echo $! > pids"},
        {"id": "uses", "command": "kill -0 $(cat pids) && echo helper-alive"},
    )
    code, doc = repo.start_json(env=FAST)
    assert code == 0
    assert repo.manifest(doc)["commands"][1]["summary"] == "helper-alive"
    assert not [pid for pid in _pids(repo) if alive(pid)]


@pytest.mark.slow
def test_heartbeat_failures_are_logged_and_never_fail_the_run(repo: Repo) -> None:
    stage = (
        'hb="$CODEX_ORCHESTRATOR_RUN_DIR/.heartbeat"; rm -f "$hb"; mkdir "$hb"; sleep 1; '
        'rmdir "$hb"; sleep 0.6; echo done'
    )
    repo.pipeline({"id": "sabotage", "command": stage})
    result = repo.cli("start", "--format", "json", env=FAST)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert f"heartbeat write failed for run {doc['run_id']}" in result.stderr
    run_dir = repo.root / doc["artifact_root"]
    events = [json.loads(line) for line in (run_dir / "runner.ndjson").read_text().splitlines()]
    failures = [e for e in events if e["event"] == "heartbeat_failed"]
    assert len(failures) >= 3
    assert (run_dir / ".heartbeat").is_file()
    beat_after = next(e for e in events if e["event"] == "heartbeat_stats")
    assert beat_after["ticks"] > beat_after["failures"]


@pytest.mark.slow
def test_heartbeat_ticks_and_throttles_manifest_writes(repo: Repo) -> None:
    repo.pipeline({"id": "wait", "command": "sleep 2"})
    env = {
        "CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS": "0.05",
        "CODEX_ORCHESTRATOR_MANIFEST_THROTTLE_SECONDS": "0.5",
    }
    code, doc = repo.start_json(env=env)
    assert code == 0
    events = [
        json.loads(line)
        for line in (repo.root / doc["artifact_root"] / "runner.ndjson").read_text().splitlines()
    ]
    stats = next(e for e in events if e["event"] == "heartbeat_stats")
    assert stats["ticks"] >= 15
    assert 1 <= stats["manifest_writes"] <= 5


@pytest.mark.slow
def test_status_reports_stale_run_and_resume_refuses_fresh_one(repo: Repo) -> None:
    repo.pipeline({"id": "long", "command": "sleep 300"})
    proc = repo.spawn("start", env=FAST)
    try:
        wait_for(
            lambda: (
                (repo.root / ".runs/default/cli").exists()
                and any((repo.root / ".runs/default/cli").glob("*/.heartbeat"))
            )
        )
        run_id = _only_run_manifest(repo)["run_id"]
        refused = repo.cli("resume", run_id)
        assert refused.returncode == 2 and "still alive" in refused.stderr
        fresh = json.loads(repo.cli("status", run_id, "--format", "json").stdout)
        assert fresh["stale"] is False and fresh["status"] == "in_progress"
        proc.kill()
        proc.wait()
        time.sleep(0.6)
        stale_env = {"CODEX_ORCHESTRATOR_HEARTBEAT_STALE_AFTER_SECONDS": "0.5"}
        stale = repo.cli("status", run_id, "--format", "json", env=stale_env)
        assert stale.returncode == 0
        report = json.loads(stale.stdout)
        assert report["stale"] is True and report["heartbeat_age_seconds"] > 0.5
        assert f"codex-orchestrator resume {run_id}" in report["hint"]
        text = repo.cli("status", run_id, env=stale_env)
        assert "STALE" in text.stdout
    finally:
        proc.kill()
        proc.communicate()
        _end_recorded_groups(repo)


def _end_recorded_groups(repo: Repo) -> None:
    """End the process groups the (killed) run recorded (``handle.pgid``, > 1 only): never
    kill by name."""
    for run_dir in (repo.root / ".runs" / "default" / "cli").glob("*"):
        kill_run_groups(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_sigkill_at_random_moments_leaves_parseable_records_and_resumes(
    repo: Repo, seed: int
) -> None:
    stages = [{"id": f"s{i}", "command": "sleep 0.05; echo step"} for i in range(8)]
    stages.append(
        {"id": "leftover", "command": "sleep 300 > /dev/null 2>&1 & echo $! >> pids; sleep 0.3"}
    )
    repo.pipeline(*stages)
    cli_dir = repo.root / ".runs/default/cli"
    delay = random.Random(seed).uniform(0.05, 1.2)
    while True:  # until the kill lands after the run exists: that is what is under test
        proc = repo.spawn("start", env=FAST)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        for path in repo.root.rglob("*.json"):
            json.loads(path.read_text())
        metrics = repo.root / ".runs/default/metrics.json"
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                json.loads(line)
        if list(cli_dir.glob("*/manifest.json")):
            break
        shutil.rmtree(cli_dir, ignore_errors=True)
        delay += 0.1
    manifest = _only_run_manifest(repo)
    run_id = manifest["run_id"]
    status = repo.cli(
        "status",
        run_id,
        "--format",
        "json",
        env={"CODEX_ORCHESTRATOR_HEARTBEAT_STALE_AFTER_SECONDS": "0.01"},
    )
    assert status.returncode == 0
    if manifest["status"] in ("in_progress", "queued"):
        assert json.loads(status.stdout)["stale"] is True
    resumed = repo.cli("resume", run_id, "--format", "json", env=FAST)
    assert resumed.returncode == 0, resumed.stderr
    final = repo.manifest(json.loads(resumed.stdout))
    assert final["status"] == "succeeded"
    assert all(c["status"] == "succeeded" for c in final["commands"])
    assert not [pid for pid in _pids(repo) if alive(pid)]
    assert repo.start_json(env=FAST)[0] == 0


def test_binary_flood_on_failing_stage_keeps_error_file_small(repo: Repo) -> None:
    stage = (
        "head -c 3000000 /dev/urandom; printf '\\001\\002\\033[31m%.0s' $(seq 1 20000) >&2; "
        "head -c 2000000 /dev/zero | tr '\\0' 'a' >&2; exit 1"
    )
    repo.pipeline({"id": "flood", "command": stage})
    code, doc = repo.start_json()
    assert code == 1
    flood = repo.manifest(doc)["commands"][0]
    error_path = repo.root / flood["error_file"]
    assert error_path.stat().st_size <= 10_240
    error = json.loads(error_path.read_text())
    details = error["details"]
    assert details["stdout_truncated"] is True and details["stderr_truncated"] is True
    assert len(details["stderr"].encode()) <= 8192 and details["stderr"].endswith("a" * 100)
    assert (repo.root / flood["log_path"]).stat().st_size == 3_000_000
    assert flood["stdout_bytes"] == 3_000_000


def test_corrupted_state_is_kept_aside_and_run_goes_on(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    state_dir = repo.root / "out/default"
    state_dir.mkdir(parents=True)
    (state_dir / "state.json").write_text("{not json")
    result = repo.cli("start", "--format", "json")
    assert result.returncode == 0
    [kept] = state_dir.glob("state.json.corrupt-*")
    assert kept.read_text() == "{not json"
    assert len([line for line in result.stderr.splitlines() if "corrupt" in line]) == 1
    state = json.loads((state_dir / "state.json").read_text())
    assert [r["runId"] for r in state["runs"]] == [json.loads(result.stdout)["run_id"]]


def test_stale_lock_file_never_blocks(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    lock = repo.root / ".runs/default.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("pid 999999 on some-host since 1999")
    os.utime(lock, (0, 0))
    code, doc = repo.start_json()
    assert code == 0
    state = json.loads((repo.root / "out/default/state.json").read_text())
    assert [r["runId"] for r in state["runs"]] == [doc["run_id"]]


@pytest.mark.slow
def test_concurrent_runs_of_one_task_lose_nothing(repo: Repo) -> None:
    runs = 30
    repo.pipeline(
        {"id": "one", "command": "echo hi"},
        settings={"lock_attempts": 2, "lock_initial_delay_ms": 5, "lock_max_delay_ms": 10},
    )
    procs = [repo.spawn("start", "--format", "json", env=FAST) for _ in range(runs)]
    docs = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    ids = {doc["run_id"] for doc in docs}
    state = json.loads((repo.root / "out/default/state.json").read_text())
    assert {r["runId"] for r in state["runs"]} == ids
    metrics = (repo.root / ".runs/default/metrics.json").read_text().splitlines()
    assert {json.loads(line)["run_id"] for line in metrics} == ids and len(metrics) == runs
    for doc in docs:
        assert repo.manifest(doc)["status"] == "succeeded"


@pytest.mark.slow
def test_resume_ends_process_group_left_by_dead_run(repo: Repo, tmp_path: Path) -> None:
    repo.pipeline({"id": "spawns", "command": "sleep 300 & echo $! > pids; wait"})
    proc = repo.spawn("start", env=FAST)
    wait_for(lambda: len(_pids(repo)) == 1, what="stage helper")
    # Only a recorded handle can be reaped: under load the shell may write its helper's pid
    # before the orchestrator recorded the stage's handle.
    wait_for(lambda: _recorded_handles(repo), what="the stage's handle")
    proc.kill()
    proc.wait()
    [helper] = _pids(repo)
    assert alive(helper)
    repo.pipeline({"id": "spawns", "command": "echo resumed"})
    result = repo.cli("resume", _only_run_manifest(repo)["run_id"], env=FAST)
    assert result.returncode == 0, result.stderr
    assert not alive(helper)


def test_stage_that_deletes_its_run_directory_gets_one_clear_error(repo: Repo) -> None:
    # repeat: a heartbeat write landing mid-way makes one `rm -rf` fail with "not empty"
    vandal = 'D="$CODEX_ORCHESTRATOR_RUN_DIR"; while [ -e "$D" ]; do rm -rf "$D" 2>/dev/null; done'
    repo.pipeline({"id": "vandal", "command": vandal})
    result = repo.cli("start", env=FAST)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "terminal manifest not written" in result.stderr
    metrics = (repo.root / ".runs/default/metrics.json").read_text().splitlines()
    assert [json.loads(line)["status"] for line in metrics] == ["failed"]
    state = json.loads((repo.root / "out/default/state.json").read_text())
    assert [run["status"] for run in state["runs"]] == ["failed"]


def test_torn_metrics_line_does_not_swallow_the_next_record(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    metrics = repo.root / ".runs/default/metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"run_id": "torn"')
    code, doc = repo.start_json()
    assert code == 0
    lines = metrics.read_text().splitlines()
    assert lines[0] == '{"run_id": "torn"'
    assert json.loads(lines[1])["run_id"] == doc["run_id"]


@pytest.mark.slow
def test_teardown_does_not_wait_for_zombies(repo: Repo) -> None:
    # dash does not exec the last command: on SIGTERM the shell dies and `sleep` is left a zombie
    # of init until reaped; teardown must not spend the whole grace period waiting for it.
    repo.pipeline(
        {"id": "slow", "command": "sleep 200; true", "timeoutMs": 300},
        settings={"kill_grace_seconds": 20},
    )
    started = time.monotonic()
    result = repo.cli("start", env=FAST)
    assert result.returncode == 1
    assert time.monotonic() - started < 10
