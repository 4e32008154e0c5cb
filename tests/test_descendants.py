"""Nothing outlives the run: escaped descendants, dead drivers' leftovers, orphaned child runs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.engine.recovery import recorded_handles
from conftest import Repo
from helpers.processes import alive, wait_for
from helpers.runctl import kill_run_groups

FAST = {"CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS": "0.1"}
# Leaves its group and session: `setsid` makes the helper the leader of a new session.
SETSID_ESCAPE = "setsid sh -c 'echo $$ >> pids; exec sleep 300' > /dev/null 2>&1 &"
# A classic daemon: fork, the intermediate exits at once, the grandchild calls setsid.
DOUBLE_FORK = (
    "( setsid sh -c 'echo $$ >> pids; exec sleep 300' > /dev/null 2>&1 & ) ; "
    "while [ ! -s pids ]; do sleep 0.01; done"
)


def _pids(root: Path) -> list[int]:
    path = root / "pids"
    return [int(word) for word in path.read_text().split()] if path.exists() else []


def _end(pids: list[int]) -> None:
    """Test cleanup: end only processes this test recorded."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("escape", [SETSID_ESCAPE, DOUBLE_FORK], ids=["setsid", "double-fork"])
def test_escaped_descendants_end_with_the_run(repo: Repo, escape: str) -> None:
    repo.pipeline({"id": "escape", "command": f"{escape}\nsleep 0.2; echo started"})
    try:
        code, doc = repo.start_json(env=FAST)
        assert code == 0
        escaped = _pids(repo.root)
        assert escaped, "the stage did not start its helper"
        stage = repo.manifest(doc)["commands"][0]
        assert all(os.getpgid(pid) != stage["pgid"] for pid in escaped if alive(pid))
        assert not [pid for pid in escaped if alive(pid)]
    finally:
        _end(_pids(repo.root))


@pytest.mark.slow
def test_escaped_process_of_a_killed_driver_is_ended_by_resume(repo: Repo) -> None:
    repo.pipeline({"id": "escape", "command": f"{SETSID_ESCAPE}\nsleep 300"})
    proc = repo.spawn("start", env=FAST)
    try:
        wait_for(lambda: bool(_pids(repo.root)), what="the escaped helper")
        proc.kill()
        proc.wait()
        [escaped] = _pids(repo.root)
        assert alive(escaped)
        run_id = next((repo.root / ".runs/default/cli").iterdir()).name
        repo.pipeline({"id": "escape", "command": "echo resumed"})
        resumed = repo.cli("resume", run_id, env=FAST)
        assert resumed.returncode == 0, resumed.stderr
        wait_for(lambda: not alive(escaped), timeout=5, what="the escaped helper to end")
    finally:
        _end(_pids(repo.root))
        for run_dir in (repo.root / ".runs/default/cli").glob("*"):
            kill_run_groups(run_dir)  # the whole stage group (its `sleep 300`), not its leader


def _manifests(repo: Repo) -> list[dict[str, Any]]:
    return [
        json.loads(path.read_text())
        for path in (repo.root / ".runs/default/cli").glob("*/manifest.json")
    ]


def _stage_handles(repo: Repo) -> list[Any]:
    return [
        handle
        for path in (repo.root / ".runs/default/cli").glob("*/manifest.json")
        for handle in recorded_handles(path.parent, json.loads(path.read_text())["commands"])
    ]


@pytest.mark.slow
def test_resuming_a_killed_parent_settles_its_child_run(repo: Repo) -> None:
    config: dict[str, Any] = {
        "defaultPipeline": "parent",
        "pipelines": [
            {"id": "parent", "stages": [{"kind": "subpipeline", "id": "sub", "pipeline": "child"}]},
            {
                "id": "child",
                "stages": [{"id": "work", "command": "echo $$ >> pids; exec sleep 300"}],
            },
        ],
    }
    repo.write_config(config)
    proc = repo.spawn("start", env=FAST)
    try:
        wait_for(lambda: bool(_pids(repo.root)), what="the child run's stage")
        # Only a recorded handle can be reaped: under load the stage may write its pid before
        # the orchestrator recorded its handle.
        wait_for(lambda: _stage_handles(repo), what="the stage's handle")
        proc.kill()
        proc.wait()
        [stage_pid] = _pids(repo.root)
        assert alive(stage_pid)
        parent = next(m for m in _manifests(repo) if m["parent_run_id"] is None)
        [link] = parent["child_runs"]
        assert link["status"] == "in_progress"
        config["pipelines"][1]["stages"][0]["command"] = "echo done"
        repo.write_config(config)
        resumed = repo.cli("resume", parent["run_id"], "--format", "json", env=FAST)
        assert resumed.returncode == 0, resumed.stderr
        assert not alive(stage_pid)
        manifests = {m["run_id"]: m for m in _manifests(repo)}
        old_child = manifests[link["run_id"]]
        assert old_child["status"] == "failed" and old_child["status_detail"] == "driver-lost"
        assert old_child["completed_at"] and old_child["metrics_recorded"] is True
        final = manifests[parent["run_id"]]
        assert final["status"] == "succeeded"
        assert [c["status"] for c in final["child_runs"]] == ["failed", "succeeded"]
    finally:
        _end(_pids(repo.root))
