"""One driver per run: a kernel lock, not a heartbeat, decides who may drive a run."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from codex_orchestrator.records.driver import run_driver
from conftest import Repo
from helpers.processes import wait_for

FAST = {"CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS": "0.1"}
STALE = {"CODEX_ORCHESTRATOR_HEARTBEAT_STALE_AFTER_SECONDS": "0.5"}


def _run_dir(repo: Repo) -> Path | None:
    found = list((repo.root / ".runs/default/cli").glob("*/manifest.json"))
    return found[0].parent if found else None


def _stage_running(repo: Repo) -> bool:
    run_dir = _run_dir(repo)
    if run_dir is None:
        return False
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except ValueError:
        return False
    return bool(manifest["commands"][0].get("handle"))


@pytest.mark.slow
def test_paused_driver_keeps_its_run_and_finishes_honestly(repo: Repo) -> None:
    repo.pipeline({"id": "work", "command": "sleep 2; echo done"})
    proc = repo.spawn("start", "--format", "json", env=FAST)
    try:
        wait_for(lambda: _stage_running(repo), what="the stage to start")
        run_dir = _run_dir(repo)
        assert run_dir is not None
        driver = run_driver(run_dir)
        assert driver.alive and driver.process is not None and driver.process.pid == proc.pid
        proc.send_signal(signal.SIGSTOP)
        time.sleep(1.0)  # past the stale threshold given below
        status = json.loads(repo.cli("status", run_dir.name, "--format", "json", env=STALE).stdout)
        assert status["stale"] is True
        for extra in ((), ("--force",)):
            refused = repo.cli("resume", run_dir.name, *extra, env={**STALE, **FAST})
            assert refused.returncode == 2, refused.stderr
            assert f"pid {proc.pid}" in refused.stderr and "Traceback" not in refused.stderr
        assert run_driver(run_dir).process == driver.process
    finally:
        proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    manifest = repo.manifest(json.loads(stdout))
    assert manifest["status"] == "succeeded" and manifest["resume_events"] == []
    assert manifest["commands"][0]["summary"] == "done"
    assert not run_driver(run_dir).alive


@pytest.mark.slow
def test_two_concurrent_resumes_one_drives_the_other_is_refused(repo: Repo) -> None:
    repo.pipeline({"id": "work", "command": "echo first; exit 1"})
    code, doc = repo.start_json(env=FAST)
    assert code == 1
    run_id = doc["run_id"]
    repo.pipeline({"id": "work", "command": "echo second-start; sleep 1; echo second-end"})
    procs = [repo.spawn("resume", run_id, "--format", "json", env=FAST) for _ in range(2)]
    results = [(proc.wait(timeout=60), *proc.communicate()) for proc in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(result for result in results if result[0] == 2)
    assert "driven by pid" in loser[2] and json.loads(loser[1])["exit_code"] == 2
    manifest = repo.manifest(doc)
    assert manifest["status"] == "succeeded"
    assert [event["outcome"] for event in manifest["resume_events"]] == ["succeeded"]
    assert manifest["commands"][0]["attempts"] == 2
    logs = repo.root / doc["artifact_root"] / "commands"
    assert (logs / "01-work.stdout.log").read_text() == "first\n"
    assert (logs / "01-work.attempt-2.stdout.log").read_text() == "second-start\nsecond-end\n"
    assert not (logs / "01-work.attempt-3.stdout.log").exists()


@pytest.mark.slow
def test_an_attempt_never_reuses_the_logs_of_an_earlier_attempt(repo: Repo) -> None:
    repo.pipeline({"id": "work", "command": "echo first; exit 1"})
    code, doc = repo.start_json(env=FAST)
    assert code == 1
    logs = repo.root / doc["artifact_root"] / "commands"
    (logs / "01-work.attempt-2.stdout.log").write_text("left by a killed attempt\n")
    repo.pipeline({"id": "work", "command": "echo again"})
    resumed = repo.cli("resume", doc["run_id"], env=FAST)
    assert resumed.returncode == 0, resumed.stderr
    assert (logs / "01-work.attempt-2.stdout.log").read_text() == "left by a killed attempt\n"
    assert (logs / "01-work.attempt-3.stdout.log").read_text() == "again\n"
    assert repo.manifest(doc)["commands"][0]["attempts"] == 3


def test_a_run_without_a_live_driver_reports_none(repo: Repo, tmp_path: Path) -> None:
    assert run_driver(tmp_path) == run_driver(tmp_path / "missing")
    assert not run_driver(tmp_path).alive
    repo.pipeline({"id": "one", "command": "true"})
    code, doc = repo.start_json()
    assert code == 0
    assert not run_driver(repo.root / doc["artifact_root"]).alive
