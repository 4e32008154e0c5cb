"""A run in which no stage ran anything (every stage skipped for a missing tool or nothing to
run) ends ``skipped`` with exit code 3, never ``succeeded``; status, runs, stats and report say
so. Driven through the real CLI in directories with nothing to check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Repo

pytestmark = pytest.mark.slow


@pytest.fixture
def bare(tmp_path: Path) -> Repo:
    """A directory with no project and no git: every built-in diagnostics stage is skipped."""
    root = tmp_path / "bare"
    root.mkdir()
    return Repo(root)


def test_a_run_that_ran_nothing_is_skipped_with_exit_3_everywhere(bare: Repo) -> None:
    code, document = bare.start_json()
    assert code == 3, document
    assert document["status"] == "skipped" and document["exit_code"] == 3
    manifest = bare.manifest(document)
    assert manifest["status"] == "skipped" and manifest["status_detail"] == "nothing-ran"
    assert {entry["skip_reason"] for entry in manifest["commands"]} == {"not-applicable"}
    run_id = document["run_id"]

    text = bare.cli("start")
    assert text.returncode == 3
    assert "skipped" in text.stdout.splitlines()[0] and "no stage ran" in text.stdout

    status = json.loads(bare.cli("status", run_id, "--format", "json").stdout)
    assert status["status"] == "skipped"
    assert bare.cli("status", run_id, "--watch").returncode == 3
    listed = json.loads(bare.cli("runs", "--status", "skipped", "--format", "json").stdout)
    assert len(listed["runs"]) == 2 and {row["stale"] for row in listed["runs"]} == {False}
    stats = json.loads(bare.cli("stats", "--format", "json").stdout)
    (task,) = stats["tasks"]
    assert task["skipped"] == 2 and task["succeeded"] == 0
    report = bare.cli("report", run_id)
    assert report.returncode == 0, report.stderr


def test_a_child_run_that_ran_nothing_makes_its_stage_skipped(bare: Repo) -> None:
    bare.pipeline({"kind": "subpipeline", "id": "diag", "pipeline": "diagnostics"})
    code, document = bare.start_json()
    assert code == 3
    (entry,) = bare.manifest(document)["commands"]
    assert entry["status"] == "skipped" and entry["summary"].endswith("no stage ran")


def test_one_stage_that_ran_makes_the_run_succeed(bare: Repo) -> None:
    bare.pipeline(
        {"kind": "subpipeline", "id": "diag", "pipeline": "diagnostics"},
        {"id": "real", "command": "true"},
    )
    code, document = bare.start_json()
    assert code == 0 and document["status"] == "succeeded"
