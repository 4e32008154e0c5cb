"""``examples/agent_diagnostics.py``: an agent-like SDK client runs diagnostics end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Repo

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent_diagnostics.py"
TASK = "0400-agent"


def _example(repo: Repo, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--root", str(repo.root), "--task", TASK, *args],
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_agent_runs_diagnostics_reads_failures_and_marks_evidence(repo: Repo) -> None:
    repo.write_config(
        {
            "pipelines": [
                {
                    "id": "diagnostics",
                    "stages": [
                        {"id": "build", "command": "echo built"},
                        {
                            "id": "lint",
                            "command": "test -f clean || { echo 'E501 line too long' >&2; exit 1; }",
                        },
                    ],
                }
            ]
        }
    )
    for mirror in (f"tasks/tasks-{TASK}.md", f".agent/task/{TASK}.md", "docs/TASKS.md"):
        path = repo.root / mirror
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Tasks\n\n## {TASK}\n- [ ] Run diagnostics\n")

    failing = _example(repo, "--mark", "Run diagnostics")
    assert failing.returncode == 1, failing.stderr
    summary = json.loads(failing.stdout)
    assert summary["status"] == "failed" and summary["failed_stages"] == ["lint"]
    assert summary["marked"] is None
    assert "E501 line too long" in failing.stderr and "progress" in failing.stderr
    assert "- [ ] Run diagnostics" in (repo.root / f"tasks/tasks-{TASK}.md").read_text()

    (repo.root / "clean").write_text("")
    passing = _example(repo, "--mark", "Run diagnostics")
    assert passing.returncode == 0, passing.stderr
    summary = json.loads(passing.stdout)
    assert summary["status"] == "succeeded" and summary["task_id"] == TASK
    assert len(summary["marked"]["changed"]) == 3
    evidence = f"- [x] Run diagnostics; Evidence: `{summary['manifest']}`"
    assert evidence in (repo.root / f"tasks/tasks-{TASK}.md").read_text()
    checked = repo.cli("tasks", "check", TASK, "--format", "json")
    assert checked.returncode == 0 and json.loads(checked.stdout)["problem_count"] == 0
