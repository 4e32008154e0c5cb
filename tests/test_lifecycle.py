"""Run lifecycle under a hostile environment: full disks, immutable and read-only run
directories, bad heartbeat settings, a dead driver seen by ``status --watch``.

Full disks are small tmpfs mounts and read-only directories read-only bind mounts, both only
in a private mount namespace (``helpers/faults.py``: nothing is mounted where other processes live);
immutable directories use ``chattr +i``, always undone. All need root; each test says so when
it skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import helpers.faults as faults
from conftest import Repo, assert_one_line_error

FAST = {"CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS": "0.1"}
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount or chattr")


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; return the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def _orchestrator(*args: str) -> list[str]:
    return [sys.executable, "-m", "codex_orchestrator", *args]


def _run(repo: Repo, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=repo.root,
        env={**repo.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@ROOT_ONLY
def test_full_disk_before_the_manifest_leaves_no_run_directory(repo: Repo, tmp_path: Path) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    runs = tmp_path / "runs"
    with faults.private_tmpfs(runs, 256) as disk:
        (disk.view(runs) / "default" / "cli").mkdir(parents=True)
        _fill(disk.view(runs))
        command = disk.wrap(_orchestrator("start"), repo.root)
        result = _run(repo, command, {"CODEX_ORCHESTRATOR_RUNS_DIR": str(runs)})
        assert_one_line_error(result, 1, "start:", "No space left on device")
        assert list((disk.view(runs) / "default" / "cli").iterdir()) == []
    assert list(runs.iterdir()) == []  # the tmpfs never showed outside its namespace


def _failed_run(
    repo: Repo, runs: Path, disk: faults.PrivateTmpfs | None = None
) -> tuple[str, Path]:
    """Start a run that fails on ``runs`` (on ``disk`` if given); its id and run directory as
    this process reaches it."""
    repo.pipeline({"id": "one", "command": "exit 1"})
    command = _orchestrator("start", "--format", "json")
    if disk is not None:
        command = disk.wrap(command, repo.root)
    result = _run(repo, command, {**FAST, "CODEX_ORCHESTRATOR_RUNS_DIR": str(runs)})
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    repo.pipeline({"id": "one", "command": "true"})
    seen = runs if disk is None else disk.view(runs)
    [run_dir] = (seen / "default" / "cli").iterdir()
    return doc["run_id"], run_dir


@pytest.mark.slow
@ROOT_ONLY
def test_full_disk_during_resume_changes_nothing_and_resume_works_later(
    repo: Repo, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    with faults.private_tmpfs(runs, 1024) as disk:
        run_id, run_dir = _failed_run(repo, runs, disk)
        before = (run_dir / "manifest.json").read_bytes()
        filler = _fill(disk.view(runs))
        env = {**FAST, "CODEX_ORCHESTRATOR_RUNS_DIR": str(runs)}
        result = _run(repo, disk.wrap(_orchestrator("resume", run_id), repo.root), env)
        assert_one_line_error(result, 1, "resume:", "No space left on device")
        assert (run_dir / "manifest.json").read_bytes() == before
        filler.unlink()
        resume = _orchestrator("resume", run_id, "--format", "json")
        again = _run(repo, disk.wrap(resume, repo.root), env)
        assert again.returncode == 0, again.stderr
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "succeeded"


@pytest.mark.slow
@ROOT_ONLY
def test_immutable_run_directory_on_resume(repo: Repo, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_id, run_dir = _failed_run(repo, runs)
    before = (run_dir / "manifest.json").read_bytes()
    try:
        if subprocess.run(["chattr", "+i", str(run_dir)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not supported on this filesystem")
        result = repo.cli("resume", run_id, env={**FAST, "CODEX_ORCHESTRATOR_RUNS_DIR": str(runs)})
    finally:
        subprocess.run(["chattr", "-i", str(run_dir)], capture_output=True, check=False)
    assert_one_line_error(result, 1, "resume:", "Operation not permitted")
    assert (run_dir / "manifest.json").read_bytes() == before


@pytest.mark.slow
@ROOT_ONLY
def test_read_only_run_directory_on_resume(repo: Repo, tmp_path: Path) -> None:
    faults.require_root_namespaces()
    runs = tmp_path / "runs"
    run_id, run_dir = _failed_run(repo, runs)
    before = (run_dir / "manifest.json").read_bytes()
    env = {**FAST, "CODEX_ORCHESTRATOR_RUNS_DIR": str(runs)}
    command = faults.read_only(_orchestrator("resume", run_id, "--format", "json"), run_dir)
    result = _run(repo, command, env)
    assert_one_line_error(result, 1, "resume:", "Read-only file system")
    assert json.loads(result.stdout)["exit_code"] == 1
    assert (run_dir / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("value", ["0.01", "0.049"])
def test_heartbeat_interval_has_a_lower_bound(repo: Repo, value: str) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    result = repo.cli("start", env={"CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS": value})
    assert_one_line_error(result, 2, "from 0.05 to 3600")
    assert not (repo.root / ".runs").exists() or not list((repo.root / ".runs").rglob("*.json"))


def _stage_pgid(run_dir: Path) -> int | None:
    events = run_dir / "runner.ndjson"
    if not events.exists():
        return None
    for line in events.read_text().splitlines():
        event: dict[str, Any] = json.loads(line)
        if event["event"] == "stage_handle":
            return int(event["handle"]["pgid"])
    return None


def _end_stage_group(repo: Repo, pgid: int | None) -> None:
    """SIGKILL the stage's recorded process group (its ``sleep 300`` outlives the killed
    driver); read it from the events if the test had not seen it yet. Never a group <= 1."""
    if pgid is None:
        found = list(repo.root.glob(".runs/default/cli/*"))
        pgid = _stage_pgid(found[0]) if found else None
    if pgid is not None and pgid > 1:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def test_status_watch_reports_a_dead_driver_at_once(repo: Repo) -> None:
    repo.pipeline({"id": "long", "command": "sleep 300"})
    proc = repo.spawn("start", env=FAST)
    pgid: int | None = None
    try:
        deadline = time.monotonic() + 20
        while pgid is None:
            assert time.monotonic() < deadline, "the stage never started"
            time.sleep(0.05)
            found = list(repo.root.glob(".runs/default/cli/*"))
            pgid = _stage_pgid(found[0]) if found else None
        proc.kill()
        proc.wait()
        [run_dir] = repo.root.glob(".runs/default/cli/*")
        started = time.monotonic()
        result = repo.cli("status", run_dir.name, "--watch", "--format", "json")
        elapsed = time.monotonic() - started
    finally:
        proc.kill()
        proc.communicate()
        _end_stage_group(repo, pgid)
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert document["orchestrator_gone"] is True and document["stale"] is False
    assert elapsed < 10  # the stale threshold is 30 s
