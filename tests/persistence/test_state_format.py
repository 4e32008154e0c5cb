"""The task-state format: one validation for the writer and every reader, and views that
read the history without writing it (real files, the real CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codex_orchestrator.persistence.runs import TaskHistory
from codex_orchestrator.persistence.state_format import TaskStateFiles, TaskStateReader
from codex_orchestrator.persistence.task_state import RunRecord, TaskStateStore
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.ids import new_run_id
from conftest import Repo

TASK = "t1"
BASE = 1_760_000_000.0


def record(seconds: float) -> RunRecord:
    run_id = new_run_id(BASE + seconds)
    return RunRecord(
        TASK, run_id, "p", "succeeded", iso_utc(BASE + seconds), f"cli/{run_id}/manifest.json"
    )


def store_in(root: Path) -> TaskStateStore:
    return TaskStateStore(root / "out" / TASK, root / ".runs" / f"{TASK}.lock", TASK)


def history_everywhere(root: Path) -> list[str]:
    """A history in every file of the format: two runs in ``state.json``, one archived, one
    pending in each pending directory. Returns the run ids, oldest first."""
    store = store_in(root)
    archived, first, second, pending, waiting = (record(n) for n in range(5))
    store.record(first)
    store.record(second)
    store.archive_path.write_text(json.dumps(archived.to_json()) + "\n")
    store.pending_path(pending).write_text(json.dumps(pending.to_json()))
    store.fallback_pending_dir.mkdir(parents=True)
    (store.fallback_pending_dir / store.pending_path(waiting).name).write_text(
        json.dumps(waiting.to_json())
    )
    # The lock holder writes its note into the lock file: this content proves no one took it.
    store.lock_path.write_text("untouched\n")
    return [r.run_id for r in (archived, first, second, pending, waiting)]


def snapshot(*roots: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for root in roots for path in root.rglob("*") if path.is_file()}


def test_one_rule_for_an_entry_writer_and_readers_agree(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    good = record(1).to_json()
    bad_id = {**record(2).to_json(), "runId": "../../elsewhere"}
    no_task = {key: value for key, value in record(3).to_json().items() if key != "taskId"}
    store.state_path.parent.mkdir(parents=True)
    store.state_path.write_text(json.dumps({"runs": [good, bad_id, no_task]}))
    warnings: list[str] = []
    reader = TaskStateReader(
        TaskStateFiles(store.files.state_dir, tmp_path / "none"), warnings.append
    )

    assert reader.recent() == [good]  # what a listing shows
    assert "2 malformed run entries" in warnings[0]
    assert store.state_path.exists()  # the reader repairs nothing
    writer = TaskStateStore(store.files.state_dir, store.lock_path, TASK, warn=warnings.append)
    assert writer.read()["runs"] == [good]  # the writer keeps exactly what the reader listed
    assert "elsewhere" not in store.state_path.read_text()


def test_reader_sees_every_file_of_the_format_and_writes_none(tmp_path: Path) -> None:
    run_ids = history_everywhere(tmp_path)
    before = snapshot(tmp_path)
    reader = TaskStateReader(store_in(tmp_path).files, pytest.fail)

    assert [entry["runId"] for entry in reader.every_run()] == run_ids[::-1]
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_views_of_a_task_leave_its_state_byte_identical_and_take_no_lock(repo: Repo) -> None:
    run_ids = history_everywhere(repo.root)
    before = snapshot(repo.root / "out", repo.root / ".runs")

    result = repo.cli("report", "--task", TASK)
    assert result.returncode == 0, result.stderr
    html = (repo.root / ".runs" / TASK / "report.html").read_text()
    assert "5 runs recorded" in html and all(run_id in html for run_id in run_ids)
    listed = repo.cli("runs", "--task", TASK, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [row["run_id"] for row in json.loads(listed.stdout)["runs"]] == run_ids[::-1]

    after = snapshot(repo.root / "out", repo.root / ".runs")
    del after[repo.root / ".runs" / TASK / "report.html"]
    assert after == before  # state.json, stamp, archive, both pending files and the lock file


@pytest.mark.slow
def test_task_report_of_a_corrupt_history_sets_nothing_aside(repo: Repo) -> None:
    state = repo.root / "out" / TASK / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"runs": [')

    result = repo.cli("report", "--task", TASK)

    assert result.returncode == 2, result.stderr  # no run known: the unknown-task error
    assert "state.json is corrupt" in result.stderr and "Traceback" not in result.stderr
    assert state.read_text() == '{"runs": [' and list(state.parent.iterdir()) == [state]


def test_history_listing_reads_through_the_reader(tmp_path: Path) -> None:
    run_ids = history_everywhere(tmp_path)
    workspace = Workspace(tmp_path, tmp_path / ".runs", tmp_path / "out")
    history = TaskHistory(workspace, TASK, pytest.fail)

    assert sorted({*history.recorded()[0], *history.archived()}) == run_ids
