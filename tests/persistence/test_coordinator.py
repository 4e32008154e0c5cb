"""PersistenceCoordinator: write order and failure isolation, on real files and a real lock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codex_orchestrator.persistence.coordinator import PersistenceCoordinator
from codex_orchestrator.persistence.task_state import RunRecord, TaskStateStore
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.ids import new_run_id
from codex_orchestrator.util.jsonio import atomic_write_json, read_json
from codex_orchestrator.util.locks import FileLock
from helpers.lock_holder import lock_held_elsewhere

TASK = "demo-task"


class Run:
    """One finished run: its record, metrics and manifest, and what the coordinator did."""

    def __init__(self, root: Path, seconds: float) -> None:
        self.root = root
        run_id = new_run_id()
        self.manifest_path = root / ".runs" / TASK / "cli" / run_id / "manifest.json"
        self.record = RunRecord(
            task_id=TASK,
            run_id=run_id,
            pipeline_id="diagnostics",
            status="succeeded",
            timestamp=iso_utc(1_760_000_000 + seconds),
            manifest=self.manifest_path.relative_to(root).as_posix(),
        )
        self.metrics = {"run_id": run_id, "task_id": TASK, "status": "succeeded"}
        self.warnings: list[str] = []
        self.seen_by_manifest: dict[str, Any] = {}

    def write_manifest(self, metrics_recorded: bool) -> None:
        """The runner's callback; also notes what was on disk when it ran."""
        self.seen_by_manifest = {
            "metrics_lines": metrics_lines(self.root),
            "state_runs": state_run_ids(self.root),
        }
        self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        manifest = {"run_id": self.record.run_id, "metrics_recorded": metrics_recorded}
        atomic_write_json(self.manifest_path, manifest, durable=True)

    def finish(self, store: TaskStateStore, metrics_path: Path | None = None) -> bool:
        coordinator = PersistenceCoordinator(
            store, metrics_path or self.root / ".runs" / TASK / "metrics.json", self.warnings.append
        )
        return coordinator.finish_run(
            metrics=self.metrics, write_manifest=self.write_manifest, record=self.record
        )


def make_store(root: Path) -> TaskStateStore:
    lock_path = root / ".runs" / f"{TASK}.lock"
    lock = FileLock(lock_path, attempts=2, initial_delay=0.01)
    return TaskStateStore(root / "out" / TASK, lock_path, TASK, lock=lock)


def metrics_lines(root: Path) -> list[dict[str, Any]]:
    path = root / ".runs" / TASK / "metrics.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def state_run_ids(root: Path) -> list[str]:
    path = root / "out" / TASK / "state.json"
    return [entry["runId"] for entry in read_json(path)["runs"]] if path.exists() else []


def test_metrics_then_manifest_then_state(tmp_path: Path) -> None:
    run = Run(tmp_path, 1)
    assert run.finish(make_store(tmp_path)) is True
    assert run.seen_by_manifest == {"metrics_lines": [run.metrics], "state_runs": []}
    assert read_json(run.manifest_path)["metrics_recorded"] is True
    assert state_run_ids(tmp_path) == [run.record.run_id]
    assert run.warnings == []


def test_metrics_failure_still_writes_manifest_and_state(tmp_path: Path) -> None:
    metrics_path = tmp_path / "metrics-is-a-directory"
    metrics_path.mkdir()
    run = Run(tmp_path, 1)
    assert run.finish(make_store(tmp_path), metrics_path) is True
    assert read_json(run.manifest_path)["metrics_recorded"] is False
    assert state_run_ids(tmp_path) == [run.record.run_id]
    (warning,) = run.warnings
    assert f"task {TASK} run {run.record.run_id}: metrics line not written" in warning


def test_manifest_failure_still_records_state(tmp_path: Path) -> None:
    run = Run(tmp_path, 1)
    run.manifest_path.parent.parent.mkdir(parents=True)
    run.manifest_path.parent.write_text("a file where the run directory should be")
    assert run.finish(make_store(tmp_path)) is True
    assert metrics_lines(tmp_path) == [run.metrics]
    assert state_run_ids(tmp_path) == [run.record.run_id]
    (warning,) = run.warnings
    assert "terminal manifest not written" in warning


def test_lock_exhausted_defers_the_snapshot_to_the_next_writer(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    deferred = Run(tmp_path, 1)
    with lock_held_elsewhere(store.lock_path):
        assert deferred.finish(store) is False
    assert metrics_lines(tmp_path) == [deferred.metrics]
    assert read_json(deferred.manifest_path)["metrics_recorded"] is True
    assert state_run_ids(tmp_path) == []
    (warning,) = deferred.warnings
    pending = store.pending_path(deferred.record)
    prefix = f"warning: task {TASK} run {deferred.record.run_id}: state snapshot deferred"
    assert warning.startswith(f"{prefix} (could not lock ")
    assert f"it stays in {pending} and is merged by the next writer" in warning
    assert read_json(pending) == deferred.record.to_json()

    following = Run(tmp_path, 2)
    assert following.finish(make_store(tmp_path)) is True
    assert state_run_ids(tmp_path) == [deferred.record.run_id, following.record.run_id]
    assert not pending.exists()


def test_a_snapshot_the_out_root_cannot_take_waits_beside_the_runs(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    blocker = tmp_path / "out" / TASK
    blocker.write_text("a file where the state directory should be")
    store = make_store(tmp_path)
    run = Run(tmp_path, 1)
    assert run.finish(store) is False
    assert metrics_lines(tmp_path) == [run.metrics]
    assert read_json(run.manifest_path)["metrics_recorded"] is True
    (warning,) = run.warnings
    pending = store.fallback_pending_dir / store.pending_path(run.record).name
    assert f"task {TASK} run {run.record.run_id}: state snapshot deferred" in warning
    assert f"it stays in {pending}" in warning
    assert read_json(pending) == run.record.to_json()

    blocker.unlink()
    following = Run(tmp_path, 2)
    assert following.finish(make_store(tmp_path)) is True
    assert state_run_ids(tmp_path) == [run.record.run_id, following.record.run_id]
    assert not pending.exists()


def test_state_that_cannot_be_saved_anywhere_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / TASK).write_text("a file where the state directory should be")
    store = make_store(tmp_path)
    store.fallback_pending_dir.parent.mkdir(parents=True)
    store.fallback_pending_dir.write_text("a file where the fallback should be")
    run = Run(tmp_path, 1)
    assert run.finish(store) is False
    assert metrics_lines(tmp_path) == [run.metrics]
    (warning,) = run.warnings
    assert f"task {TASK} run {run.record.run_id}: state snapshot not saved" in warning
