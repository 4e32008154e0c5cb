"""Run references through the real CLI: a unique prefix or suffix of a run id, ``@last`` and
``@last-N`` wherever a RUN is taken; an ambiguous prefix is exit 2 naming the candidates."""

from __future__ import annotations

import json
import os

import pytest

from conftest import Repo, assert_usage_error


def _run_id(repo: Repo, *args: str) -> str:
    result = repo.cli(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    run_id: str = json.loads(result.stdout)["run_id"]
    return run_id


@pytest.mark.slow
def test_run_references_everywhere_a_run_is_taken(repo: Repo) -> None:
    repo.pipeline({"id": "hello", "command": "echo hello"})
    first = _run_id(repo, "start")
    second = _run_id(repo, "start")
    other_task = _run_id(repo, "start", "--task", "other")
    assert _run_id(repo, "status", "@last") == second
    assert _run_id(repo, "status", "@last-1") == first
    assert _run_id(repo, "status") == second  # no RUN: the newest of the task
    assert _run_id(repo, "status", "--task", "other") == other_task
    assert _run_id(repo, "status", first[-8:]) == first  # the random tail
    assert _run_id(repo, "status", "--run", second[:-1]) == second
    assert _run_id(repo, "report", first[-8:]) == first
    assert _run_id(repo, "cancel", first[-8:]) == first  # already ended: nothing to do
    logs = repo.cli("logs", first[-8:], "hello")
    assert logs.returncode == 0, logs.stderr
    assert json.loads(repo.cli("logs", "--format", "json").stdout)["run_id"] == second

    assert_usage_error(repo.cli("status", "@last-3"), "task default has only 2 runs")
    assert_usage_error(repo.cli("status", first[:4]), "unknown run", "at least 6 characters")
    assert_usage_error(repo.cli("status", "ffffffffff"), "no run of any task starts or ends")
    assert_usage_error(repo.cli("status", "@first"), "a RUN is a run id")
    assert_usage_error(repo.cli("logs", "hello"), "codex-orchestrator logs @last hello")


def test_an_ambiguous_prefix_lists_the_candidates(repo: Repo) -> None:
    runs = [
        "2026-01-01T00-00-00-000Z-0a1b2c3d",
        "2026-01-01T00-00-01-000Z-1a1b2c3d",
        "2026-01-02T00-00-00-000Z-2a1b2c3d",
    ]
    for run_id in runs:  # run directories as the tool names them; no manifest is read
        os.makedirs(repo.root / ".runs" / "default" / "cli" / run_id)
    line = assert_usage_error(repo.cli("status", "2026-01-01"), "ambiguous", "fits 2 runs")
    assert runs[0] in line and runs[1] in line and runs[2] not in line
    assert_usage_error(repo.cli("logs", "a1b2c3d"), "fits 3 runs")
    line = assert_usage_error(repo.cli("resume", "2026-01"), "ambiguous")
    assert all(run_id in line for run_id in runs)
