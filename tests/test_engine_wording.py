"""The words a run prints, through the real CLI: a stage that runs ``plan`` is summed up by a
line that reads alone (not ``2. lint, test``), and the stage table never repeats the status or
the stage id at the head of a summary, nor a run's detail equal to its status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Repo
from helpers.processes import wait_for

pytestmark = pytest.mark.slow


def test_a_stage_running_plan_is_summed_up_readably(repo: Repo) -> None:
    (repo.root / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n')
    plan = '"$CODEX_ORCHESTRATOR_PYTHON" -m codex_orchestrator plan diagnostics'
    repo.pipeline({"id": "plan-diagnostics", "command": plan})
    code, document = repo.start_json()
    assert code == 0
    summary = repo.manifest(document)["commands"][0]["summary"]
    assert summary.startswith("pipeline diagnostics: 4 stages") and "nothing was run" in summary


def test_the_stage_table_says_each_thing_once(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    root.mkdir()
    bare = Repo(root)
    result = bare.cli("start")
    assert result.returncode == 3
    rows = [line for line in result.stdout.splitlines() if line.startswith("   ")]
    assert len(rows) == 4 and not any("skipped: " in row for row in rows), rows
    assert any(row.split()[1:3] == ["spec-guard", "skipped"] for row in rows), rows
    run_id = result.stdout.split()[1].rstrip(":")
    status = bare.cli("status", run_id).stdout
    assert "skipped: " not in status and "(nothing-ran)" in status.splitlines()[0]


def test_a_cancelled_run_does_not_repeat_its_status(repo: Repo) -> None:
    repo.pipeline({"id": "wait", "command": "sleep 30"})
    proc = repo.spawn("start", "--quiet")
    try:
        runs: list[dict[str, object]] = []

        def started() -> bool:
            runs[:] = json.loads(repo.cli("runs", "--format", "json").stdout)["runs"]
            return bool(runs) and runs[0]["status"] == "in_progress"

        wait_for(started, timeout=30)
        assert repo.cli("cancel", str(runs[0]["run_id"]), "--wait").returncode == 0
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = stdout.splitlines()[0]
    assert first.endswith(": cancelled"), first
