"""A cache directory on a read-only or a full filesystem: stores fail with one line, lookups
still work, nothing partial is left. Real mounts in a private namespace (see tests/helpers/faults.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from codex_orchestrator.cache.spec import CacheSpec
from helpers.faults import full, read_only_dir, require_root_namespaces

from .cache_kit import Stage, drive, driver_env, write


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    root = tmp_path / "root"
    write(root, "src/app.py")
    return Stage(root, tmp_path / "cache", CacheSpec(inputs=("src/**",)))


def _run(command: list[str]) -> tuple[list[dict[str, object]], str]:
    result = subprocess.run(
        command, env=driver_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def _one_line_error(answer: dict[str, object], why: str) -> None:
    error = str(answer.get("error"))
    assert why in error and "\n" not in error, answer
    assert error.startswith("stage cache: could not store stage test: ")
    assert "the stage will run again next time" in error


def test_a_read_only_cache_directory_fails_stores_and_keeps_lookups(stage: Stage) -> None:
    assert stage.store("run-1") == "stored"
    other = Stage(stage.root, stage.cache, stage.spec, command="make other")
    with read_only_dir(stage.cache) as wrap:
        (stored,), store_warnings = _run(drive(other, ["store", "run-2", 0], wrap=wrap))
        (found,), lookup_warnings = _run(drive(stage, ["lookup"], wrap=wrap))
    _one_line_error(stored, "Read-only file system")
    assert found == {"hit": True, "reason": None, "from_run": "run-1"}
    assert store_warnings == lookup_warnings == ""  # the failing stat cache costs no line


def test_a_full_cache_directory_fails_stores_and_leaves_nothing(stage: Stage) -> None:
    require_root_namespaces()
    stage.cache.mkdir()
    command = drive(stage, ["store", "run-1", 0], ["state"], ["lookup"])
    (stored, state, found), warnings = _run(full(command, stage.cache, size_kib=64))
    _one_line_error(stored, "No space left on device")
    assert state == {"entries": 0, "partial": 0}
    assert found == {"hit": False, "reason": "no entry", "from_run": None}
    assert warnings == ""


def test_a_disk_filling_up_mid_store_leaves_nothing(stage: Stage) -> None:
    require_root_namespaces()
    stage.cache.mkdir()
    command = drive(stage, ["store", "run-1", 4 * 1024 * 1024], ["state"], ["lookup"])
    (stored, state, found), _ = _run(full(command, stage.cache, size_kib=1024, fill=False))
    _one_line_error(stored, "No space left on device")
    assert state == {"entries": 0, "partial": 0}
    assert found["hit"] is False
