"""Never trust a process id from a file: tampered handles are refused with one warning line.

The hostile values (0, 1, true, -5) would address the caller's own process group or every
process if they reached ``kill``; those resumes run inside a fresh pid namespace with a
sentinel process, so a regression kills the sentinel rather than the machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.util.procfs import process_start_ticks
from conftest import Repo

SENTINEL_SCRIPT = (
    'sleep 60 & S=$!; "$@"; code=$?; '
    "if kill -0 $S 2>/dev/null; then echo sentinel-alive >&2; kill $S; fi; exit $code"
)


def _failed_run(repo: Repo) -> tuple[str, Path]:
    repo.pipeline({"id": "one", "command": "exit 1"})
    code, doc = repo.start_json()
    assert code == 1
    return doc["run_id"], repo.root / doc["manifest"]


def _tamper(manifest_path: Path, **handle_fields: Any) -> None:
    """Rewrite the stage's handle wherever the run recorded it (manifest and event log)."""
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["commands"][0]
    entry["handle"].update(handle_fields)
    entry.update({key: value for key, value in handle_fields.items() if key != "host"})
    manifest_path.write_text(json.dumps(manifest))
    events_path = manifest_path.parent / "runner.ndjson"
    lines = []
    for line in events_path.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "stage_handle":
            event["handle"].update(handle_fields)
        lines.append(json.dumps(event))
    events_path.write_text("\n".join(lines) + "\n")


def _resume_with_sentinel(
    repo: Repo, run_id: str, namespace: bool
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "codex_orchestrator", "resume", run_id]
    wrapper = ["sh", "-c", SENTINEL_SCRIPT, "sentinel", *command]
    if namespace:
        wrapper = ["unshare", "--pid", "--fork", "--mount-proc", *wrapper]
    return subprocess.run(
        wrapper,
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        start_new_session=True,
    )


def _namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: not signalling")]


@pytest.mark.slow
def test_pgid_zero_never_signals_the_callers_group(repo: Repo) -> None:
    run_id, path = _failed_run(repo)
    _tamper(path, pgid=0, pid=0)
    repo.pipeline({"id": "one", "command": "true"})
    # in its own session, and in a fresh pid namespace too where there is one
    result = _resume_with_sentinel(repo, run_id, namespace=_namespace_available())
    assert result.returncode == 0, result.stderr
    assert "sentinel-alive" in result.stderr
    assert len(_warnings(result.stderr)) == 1 and "not a valid process group id" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("value", [1, True, -5, "x", None, 2**70])
def test_hostile_pgid_values_are_refused(repo: Repo, value: object) -> None:
    if not _namespace_available():
        pytest.skip("unshare --pid is not available: cannot contain a kill(-1) regression")
    run_id, path = _failed_run(repo)
    _tamper(path, pgid=value, pid=value)
    repo.pipeline({"id": "one", "command": "true"})
    result = _resume_with_sentinel(repo, run_id, namespace=True)
    assert result.returncode == 0, result.stderr
    assert "sentinel-alive" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(_warnings(result.stderr)) == 1


def _stranger() -> subprocess.Popen[bytes]:
    """A live process group that is not the run's: a reused pid, as far as resume can tell."""
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda pid, ticks: {"pgid": pid, "pid_start_ticks": ticks - 1}, id="reused"),
        pytest.param(lambda pid, ticks: {"pgid": pid, "pid_start_ticks": "soon"}, id="ticks-text"),
        pytest.param(
            lambda pid, ticks: {"pgid": pid, "pid_start_ticks": ticks, "host": "elsewhere"},
            id="other-host",
        ),
    ],
)
@pytest.mark.slow
def test_a_live_group_that_is_not_provably_ours_is_left_alone(repo: Repo, tamper: Any) -> None:
    stranger = _stranger()
    try:
        ticks = process_start_ticks(stranger.pid)
        assert ticks is not None
        run_id, path = _failed_run(repo)
        _tamper(path, **tamper(stranger.pid, ticks))
        repo.pipeline({"id": "one", "command": "true"})
        result = repo.cli("resume", run_id)
        assert result.returncode == 0, result.stderr
        assert stranger.poll() is None, "resume signalled a process that is not the run's"
        assert len([line for line in result.stderr.splitlines() if "warning: not" in line]) == 1
    finally:
        stranger.kill()
        stranger.wait()
