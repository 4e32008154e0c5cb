"""Closed standard streams and readers that go away: no traceback, the usual exit code.

The run still completes and records itself; only what nobody can read is dropped.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import Repo

SLOW_STAGE = {"id": "slow", "command": "sleep 0.3; echo done"}


def _shell(repo: Repo, script: str) -> subprocess.CompletedProcess[str]:
    python = f"{sys.executable} -m codex_orchestrator"
    return subprocess.run(
        ["bash", "-c", script.replace("CO", python)],
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _runs(repo: Repo) -> list[dict[str, object]]:
    manifests = sorted((repo.root / ".runs" / "default" / "cli").glob("*/manifest.json"))
    return [json.loads(path.read_text()) for path in manifests]


@pytest.mark.slow
@pytest.mark.parametrize("redirect", [">&-", "2>&-", ">&- 2>&-"])
def test_start_with_closed_standard_streams(repo: Repo, redirect: str) -> None:
    repo.pipeline(SLOW_STAGE)
    result = _shell(repo, f"exec 3>&1; CO start --format json {redirect}; echo exit=$? >&3")
    assert result.stdout.strip().endswith("exit=0"), (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    (manifest,) = _runs(repo)
    assert manifest["status"] == "succeeded"
    assert (repo.root / "out" / "default" / "state.json").is_file()


def test_start_into_a_closed_pipe(repo: Repo) -> None:
    repo.pipeline(SLOW_STAGE)
    result = _shell(repo, 'CO start --format json | true; echo "exit=${PIPESTATUS[0]}"')
    assert result.stdout.strip() == "exit=0", result.stderr
    assert "Traceback" not in result.stderr
    assert "Broken pipe" not in result.stderr
    (manifest,) = _runs(repo)
    assert manifest["status"] == "succeeded"


@pytest.mark.slow
def test_status_into_a_closed_pipe(repo: Repo) -> None:
    repo.pipeline(SLOW_STAGE)
    code, document = repo.start_json()
    assert code == 0
    run_id = document["run_id"]
    for reader in ("head -0", "true"):
        result = _shell(repo, f'CO status {run_id} | {reader}; echo "exit=${{PIPESTATUS[0]}}"')
        assert result.stdout.strip() == "exit=0", result.stderr
        assert "Traceback" not in result.stderr
        assert "Exception ignored" not in result.stderr
