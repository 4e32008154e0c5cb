"""Read-only and full filesystems: one line and a documented exit code, and no lost record.

Real faults: read-only bind mounts and full tmpfs mounts in a private mount namespace when
running as root, ``chmod`` otherwise (see ``helpers/faults.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC, Repo, assert_one_line_error
from helpers.faults import full, read_only_dir, require_root_namespaces

OK_STAGE = {"id": "ok", "command": "echo fine"}


def _cli(repo: Repo, command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=repo.root, env=repo.env, capture_output=True, text=True, timeout=60
    )


def _orchestrator(*args: str) -> list[str]:
    return [sys.executable, "-m", "codex_orchestrator", *args]


def _state_runs(repo: Repo) -> list[str]:
    state = json.loads((repo.root / "out" / "default" / "state.json").read_text())
    return [entry["runId"] for entry in state["runs"]]


def _fallback(repo: Repo) -> Path:
    return repo.root / ".runs" / "default" / "state.pending"


def _assert_snapshot_waits(repo: Repo, result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    run_id: str = json.loads(result.stdout)["run_id"]
    assert "state snapshot deferred" in result.stderr
    (pending,) = _fallback(repo).iterdir()
    assert pending.name.startswith(run_id)
    assert json.loads(pending.read_text())["runId"] == run_id
    return run_id


def _assert_merged_by_next_writer(repo: Repo, first: str) -> None:
    code, document = repo.start_json()
    assert code == 0
    assert _state_runs(repo) == [first, document["run_id"]]
    assert list(_fallback(repo).iterdir()) == []


def test_a_read_only_out_root_loses_no_snapshot(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    (repo.root / "out").mkdir()
    with read_only_dir(repo.root / "out") as wrap:
        result = _cli(repo, wrap(_orchestrator("start", "--format", "json")))
    first = _assert_snapshot_waits(repo, result)
    assert repo.cli("status", first).returncode == 0  # finds the run, and merges its snapshot
    assert _state_runs(repo) == [first]
    assert list(_fallback(repo).iterdir()) == []


@pytest.mark.slow
def test_concurrent_runs_against_a_read_only_out_root_lose_nothing(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    (repo.root / "out").mkdir()
    with read_only_dir(repo.root / "out") as wrap:
        command = wrap(_orchestrator("start", "--format", "json"))
        processes = [
            subprocess.Popen(
                command, cwd=repo.root, env=repo.env, stdout=subprocess.PIPE, text=True
            )
            for _ in range(5)
        ]
        run_ids = [
            json.loads(process.communicate(timeout=60)[0])["run_id"] for process in processes
        ]
    assert all(process.returncode == 0 for process in processes)
    assert len(list(_fallback(repo).iterdir())) == 5
    assert repo.cli("status", run_ids[0]).returncode == 0
    assert sorted(_state_runs(repo)) == sorted(run_ids)


def test_a_full_out_root_loses_no_snapshot(repo: Repo) -> None:
    require_root_namespaces()
    repo.pipeline(OK_STAGE)
    (repo.root / "out").mkdir()
    result = _cli(repo, full(_orchestrator("start", "--format", "json"), repo.root / "out"))
    first = _assert_snapshot_waits(repo, result)
    _assert_merged_by_next_writer(repo, first)


@pytest.mark.slow
def test_a_read_only_runs_root_for_an_existing_task_is_one_line(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    assert repo.start_json()[0] == 0
    runs = repo.root / ".runs"
    with read_only_dir(runs) as wrap:
        start = _cli(repo, wrap(_orchestrator("start", "--format", "json")))
        review = _cli(repo, wrap(_orchestrator("review", "--format", "json")))
    assert_one_line_error(start, 1, "start:", str(runs / "default" / "cli"))
    assert json.loads(start.stdout)["exit_code"] == 1
    assert_one_line_error(review, 1, "review:", "review.md")


def test_the_debug_variable_shows_the_traceback(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    assert repo.start_json()[0] == 0
    with read_only_dir(repo.root / ".runs") as wrap:
        result = subprocess.run(
            wrap(_orchestrator("review")),
            cwd=repo.root,
            env={**repo.env, "CODEX_ORCHESTRATOR_DEBUG": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "Traceback" in result.stderr


SHORT_WRITE = """
import errno, os, sys
from pathlib import Path
from codex_orchestrator.util.jsonio import append_line
path = Path(sys.argv[1]) / "metrics.json"
path.write_text('{"first": 1}\\n')
filler = os.open(Path(sys.argv[1]) / "filler", os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(filler, b"x" * 512)
except OSError:
    os.close(filler)
try:
    append_line(path, '{"big": "' + "y" * 100_000 + '"}')
except OSError as error:
    assert error.errno == errno.ENOSPC, error
    print("refused:", error.strerror)
else:
    print("appended")
print(repr(path.read_text()))
"""


def test_a_short_metrics_write_leaves_no_torn_line(repo: Repo, tmp_path: Path) -> None:
    require_root_namespaces()
    target = tmp_path / "tiny"
    target.mkdir()
    script = [sys.executable, "-c", SHORT_WRITE, str(target)]
    command = full(script, target, size_kib=32, fill=False)
    result = subprocess.run(
        command,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("refused: short write"), result.stdout
    assert lines[1] == repr('{"first": 1}\n')


def test_an_environment_fault_in_tasks_mark_is_one_line(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    code, document = repo.start_json("--task", "0500-fault")
    assert code == 0
    mirror = repo.root / "tasks" / "tasks-0500-fault.md"
    mirror.parent.mkdir()
    mirror.write_text("# Task 0500-fault\n\n- [ ] Item\n")
    with read_only_dir(mirror.parent) as wrap:
        command = _orchestrator("tasks", "mark", "0500-fault", "item", "--run", document["run_id"])
        result = _cli(repo, wrap(command))
    # the committed evidence record is written first: its directory is the path that failed
    assert_one_line_error(result, 1, "tasks mark:", str(mirror.parent / "evidence"))
    assert mirror.read_text() == "# Task 0500-fault\n\n- [ ] Item\n"
