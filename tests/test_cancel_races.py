"""Cancel races, with real concurrent processes: concurrent cancels all keep their reasons; a
cancel that meets a run ending by itself says so honestly and leaves no request behind
(`cancelrequest`: requests are added under the run's request lock, which the final records
hold until the run is closed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo
from helpers.processes import alive, wait_for
from helpers.runctl import json_cli, kill_run_groups, manifest_of, run_dirs, try_manifest

#: A stage that takes its time to end when asked: ignores SIGTERM until SIGKILL.
STUBBORN = (
    "trap '' TERM; echo $$ > {pid}; i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
)
#: A stage that succeeds at once but leaves a helper in its group that ignores SIGTERM: the run
#: ends only after its executor has waited the grace period out and killed the helper.
LINGERING = "( trap '' TERM; echo $$ > {pid}; exec sleep 60 ) & while [ ! -s {pid} ]; do sleep 0.01; done; echo done"


def _start_detached(repo: Repo, task: str, command: str, grace: float) -> tuple[str, Path]:
    """Start a one-stage run detached: its id and directory."""
    repo.pipeline({"id": "only", "command": command}, settings={"kill_grace_seconds": grace})
    code, started = json_cli(repo, "start", "--task", task, "--detach")
    assert code == 0, started
    return str(started["run_id"]), repo.root / started["artifact_root"]


def _running(repo: Repo, task: str, stage_done: bool) -> Path:
    def ready() -> Path | None:
        dirs = run_dirs(repo, task)
        manifest = try_manifest(dirs[-1]) if dirs else None
        if manifest is None or not (repo.root / "stage.pid").exists():
            return None
        status = manifest["commands"][0]["status"]
        return dirs[-1] if status == ("succeeded" if stage_done else "running") else None

    run_dir: Path = wait_for(ready, what="the stage")
    return run_dir


def _spawn_cancel(repo: Repo, run_id: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "codex_orchestrator", "cancel", run_id, "--format", "json", *args],
        cwd=repo.root,
        env=repo.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_cancel_races_concurrent_cancels_all_keep_their_reasons(repo: Repo) -> None:
    run_id, run_dir = _start_detached(repo, "many", STUBBORN.format(pid="stage.pid"), 3)
    try:
        _running(repo, "many", stage_done=False)
        cancels = [
            _spawn_cancel(repo, run_id, "--actor", f"op{n}", "--reason", f"why-{n}")
            for n in range(6)
        ]
        results: list[dict[str, Any]] = []
        for cancel in cancels:
            stdout, stderr = cancel.communicate(timeout=60)
            assert cancel.returncode == 0, stderr
            results.append(json.loads(stdout))
        wait_for(lambda: manifest_of(run_dir)["status"] == "cancelled", what="the run to end")
    finally:
        kill_run_groups(run_dir)
    manifest = manifest_of(run_dir)
    recorded = sorted(event["reason"] for event in manifest["cancel_events"])
    assert recorded == [f"why-{n}" for n in range(6)], (recorded, results)
    assert sorted(event["actor"] for event in manifest["cancel_events"]) == [
        f"op{n}" for n in range(6)
    ]
    assert manifest["status_detail"] == "cancelled"
    assert not (run_dir / "cancel-request.json").exists()


@pytest.mark.slow
def test_cancel_races_a_run_ending_by_itself_is_reported_honestly(repo: Repo) -> None:
    """The stage succeeded; the run is still closing (its helper takes the grace period to
    end) when the cancel comes: the run ends succeeded, the cancel says it came too late, and
    no request is left behind."""
    run_id, run_dir = _start_detached(repo, "late", LINGERING.format(pid="stage.pid"), 2)
    try:
        _running(repo, "late", stage_done=True)
        assert manifest_of(run_dir)["status"] == "in_progress"
        code, result = json_cli(repo, "cancel", run_id, "--wait", "--reason", "late")
    finally:
        helper = int((repo.root / "stage.pid").read_text() or 0)
        kill_run_groups(run_dir)
    assert code == 0, result
    manifest = manifest_of(run_dir)
    assert manifest["status"] == "succeeded" and manifest["status_detail"] is None, manifest
    assert result["action"] == "ended-first" and result["status"] == "succeeded", result
    assert not manifest.get("cancel_events")
    assert not (run_dir / "cancel-request.json").exists()
    text = repo.cli("cancel", run_id)
    assert text.returncode == 0 and "already ended (succeeded)" in text.stdout
    wait_for(lambda: not alive(helper), timeout=10, what="the helper to be ended with the run")
