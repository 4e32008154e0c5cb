"""Run lifecycle under a hostile environment: full disks, immutable and read-only run
directories, bad heartbeat settings, a dead driver seen by ``status --watch``.

Full disks are small tmpfs mounts, read-only directories are read-only bind mounts and
immutable ones use ``chattr +i``: all need root, and each test says so when it skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo, assert_one_line_error

FAST = {"CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS": "0.1"}
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount or chattr")


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@contextmanager
def _tiny_disk(path: Path, size: str = "256k") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


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


@ROOT_ONLY
def test_full_disk_before_the_manifest_leaves_no_run_directory(repo: Repo, tmp_path: Path) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    with _tiny_disk(tmp_path / "runs") as disk:
        (disk / "default" / "cli").mkdir(parents=True)
        _fill(disk)
        result = repo.cli("start", env={"CODEX_ORCHESTRATOR_RUNS_DIR": str(disk)})
        assert_one_line_error(result, 1, "start:", "No space left on device")
        assert list((disk / "default" / "cli").iterdir()) == []


def _failed_run(repo: Repo, runs: Path) -> tuple[str, Path]:
    repo.pipeline({"id": "one", "command": "exit 1"})
    env = {**FAST, "CODEX_ORCHESTRATOR_RUNS_DIR": str(runs)}
    result = repo.cli("start", "--format", "json", env=env)
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    repo.pipeline({"id": "one", "command": "true"})
    [run_dir] = (runs / "default" / "cli").iterdir()
    return doc["run_id"], run_dir


@ROOT_ONLY
def test_full_disk_during_resume_changes_nothing_and_resume_works_later(
    repo: Repo, tmp_path: Path
) -> None:
    with _tiny_disk(tmp_path / "runs", "1m") as disk:
        run_id, run_dir = _failed_run(repo, disk)
        before = (run_dir / "manifest.json").read_bytes()
        filler = _fill(disk)
        env = {**FAST, "CODEX_ORCHESTRATOR_RUNS_DIR": str(disk)}
        result = repo.cli("resume", run_id, env=env)
        assert_one_line_error(result, 1, "resume:", "No space left on device")
        assert (run_dir / "manifest.json").read_bytes() == before
        filler.unlink()
        again = repo.cli("resume", run_id, "--format", "json", env=env)
        assert again.returncode == 0, again.stderr
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "succeeded"


@ROOT_ONLY
def test_immutable_run_directory_on_resume(repo: Repo, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_id, run_dir = _failed_run(repo, runs)
    before = (run_dir / "manifest.json").read_bytes()
    if subprocess.run(["chattr", "+i", str(run_dir)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        result = repo.cli("resume", run_id, env={**FAST, "CODEX_ORCHESTRATOR_RUNS_DIR": str(runs)})
    finally:
        subprocess.run(["chattr", "-i", str(run_dir)], check=False)
    assert_one_line_error(result, 1, "resume:", "Operation not permitted")
    assert (run_dir / "manifest.json").read_bytes() == before


@ROOT_ONLY
def test_read_only_run_directory_on_resume(repo: Repo, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_id, run_dir = _failed_run(repo, runs)
    before = (run_dir / "manifest.json").read_bytes()
    if not _mount("--bind", str(run_dir), str(run_dir)):
        pytest.skip("cannot bind-mount here")
    try:
        if not _mount("-o", "remount,ro,bind", str(run_dir)):
            pytest.skip("cannot remount read-only here")
        env = {**FAST, "CODEX_ORCHESTRATOR_RUNS_DIR": str(runs)}
        result = repo.cli("resume", run_id, "--format", "json", env=env)
    finally:
        subprocess.run(["umount", str(run_dir)], check=False)
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
        proc.wait()
        if pgid is not None and pgid > 1:
            subprocess.run(["kill", "-KILL", f"-{pgid}"], capture_output=True, check=False)
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert document["orchestrator_gone"] is True and document["stale"] is False
    assert elapsed < 10  # the stale threshold is 30 s
