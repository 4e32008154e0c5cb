"""Several processes on one cache: concurrent storers of one key, readers during stores, and
storers killed with SIGKILL; all real processes."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.cache.store import Hit

from .cache_kit import Stage, drive, driver_env, entry_dirs, write


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    root = tmp_path / "root"
    for n in range(20):
        write(root, f"src/m{n}.py", f"module {n}\n")
    return Stage(root, tmp_path / "cache", CacheSpec(inputs=("src/**",)))


def _spawn(stage: Stage, *operations: list[object]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        drive(stage, *operations),
        env=driver_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _answers(process: subprocess.Popen[str]) -> tuple[list[dict[str, object]], str]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()], err


@pytest.mark.slow
def test_ten_concurrent_storers_of_one_key_leave_one_whole_entry(stage: Stage) -> None:
    storers = [_spawn(stage, ["store", f"run-{n}", 4 * 1024 * 1024]) for n in range(10)]
    readers = [_spawn(stage, *[["lookup"]] * 40) for _ in range(2)]
    outcomes = []
    for process in storers:
        answers, err = _answers(process)
        outcomes.append(answers[0]["outcome"])
        assert err == ""
    assert sorted(outcomes) == ["exists"] * 9 + ["stored"]
    for process in readers:
        answers, err = _answers(process)
        assert err == "", err  # never a damaged entry
        for answer in answers:
            assert answer["hit"] or answer["reason"] == "no entry", answer
    (entry,) = entry_dirs(stage.cache)
    assert list((stage.cache / "tmp").iterdir()) == []
    found = stage.lookup()
    assert isinstance(found, Hit)
    winner = [f"run-{n}" for n, outcome in enumerate(outcomes) if outcome == "stored"]
    assert [found.from_run] == winner
    assert (entry / "stdout.log").stat().st_size == 4 * 1024 * 1024
    assert stage.warnings == []


def _wait_for_partial(stage: Stage, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = list((stage.cache / "tmp").glob("*/stdout.log")) if stage.cache.exists() else []
        if partial and partial[0].stat().st_size > 0:
            return
        assert process.poll() is None, "the store finished before it could be killed"
        time.sleep(0.002)
    raise AssertionError("no partial entry appeared")


def test_a_store_killed_midway_leaves_nothing_that_could_hit(stage: Stage) -> None:
    storer = _spawn(stage, ["store", "run-killed", 2 * 1024**3])  # a 2 GiB (sparse) log
    _wait_for_partial(stage, storer)
    storer.send_signal(signal.SIGKILL)
    storer.communicate(timeout=60)
    assert storer.returncode == -signal.SIGKILL
    assert entry_dirs(stage.cache) == []
    assert stage.lookup().reason == "no entry"  # type: ignore[union-attr]
    assert stage.warnings == []
    assert len(list((stage.cache / "tmp").iterdir())) == 1  # the leftover, never looked at
    assert stage.store_handle().sweep_partial(0) == 1
    assert stage.store("run-2") == "stored"
    assert isinstance(stage.lookup(), Hit)


@pytest.mark.slow
def test_kills_at_random_moments_never_leave_a_damaged_entry(stage: Stage) -> None:
    rng = random.Random(23)
    for attempt in range(6):
        stage.command = f"attempt {attempt}"  # a fresh key each time
        storer = _spawn(stage, ["store", f"run-{attempt}", 256 * 1024])
        time.sleep(rng.uniform(0.05, 0.6))
        storer.send_signal(signal.SIGKILL)
        storer.communicate(timeout=60)
        found = stage.lookup()
        assert isinstance(found, Hit) or found.reason in ("no entry", "command changed"), found
        assert stage.warnings == []
