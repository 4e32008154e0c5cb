"""TaskStateStore: real files, real flock, real concurrent processes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.errors import LockTimeoutError
from codex_orchestrator.persistence.task_state import RunRecord, TaskStateStore
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.ids import new_run_id
from codex_orchestrator.util.locks import FileLock
from helpers.lock_holder import lock_held_elsewhere

TASK = "0202-orchestrator-hardening"
BASE = 1_760_000_000.0
FORK = multiprocessing.get_context("fork")


def make_record(seconds: float, run_id: str | None = None, status: str = "succeeded") -> RunRecord:
    run_id = run_id or new_run_id(BASE + seconds)
    return RunRecord(
        task_id=TASK,
        run_id=run_id,
        pipeline_id="diagnostics",
        status=status,
        timestamp=iso_utc(BASE + seconds),
        manifest=f".runs/{TASK}/cli/{run_id}/manifest.json",
    )


def make_store(root: Path, warnings: list[str] | None = None, **kwargs: Any) -> TaskStateStore:
    """A store under ``root`` whose lock gives up fast (2 tries, 10 ms apart)."""
    lock_path = root / ".runs" / f"{TASK}.lock"
    return TaskStateStore(
        root / "out" / TASK,
        lock_path,
        TASK,
        lock=FileLock(lock_path, attempts=2, initial_delay=0.01),
        warn=None if warnings is None else warnings.append,
        **kwargs,
    )


def on_disk(store: TaskStateStore) -> dict[str, Any]:
    """state.json as a plain JSON reader sees it (no merging)."""
    document: dict[str, Any] = json.loads(store.state_path.read_bytes())
    return document


def run_ids(document: dict[str, Any]) -> list[str]:
    return [entry["runId"] for entry in document["runs"]]


def test_read_of_a_task_without_history(tmp_path: Path) -> None:
    assert make_store(tmp_path).read() == {"taskId": TASK, "lastRunAt": None, "runs": []}


def test_record_then_read(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    records = [make_record(seconds) for seconds in (1, 2, 3)]
    for record in records:
        store.record(record)
    document = on_disk(store)
    assert document == {
        "taskId": TASK,
        "lastRunAt": records[-1].timestamp,
        "runs": [record.to_json() for record in records],
    }
    assert store.read() == document
    assert list(store.pending_dir.iterdir()) == []
    assert store.state_path == tmp_path / "out" / TASK / "state.json"


def test_newer_snapshot_of_a_run_replaces_the_older_one(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first, other = make_record(1, status="failed"), make_record(2)
    store.record(first)
    store.record(other)
    resumed = make_record(3, run_id=first.run_id)
    store.record(resumed)
    assert on_disk(store)["runs"] == [other.to_json(), resumed.to_json()]
    store.record(make_record(0.5, run_id=first.run_id, status="failed"))  # older: ignored
    assert on_disk(store)["runs"] == [other.to_json(), resumed.to_json()]
    assert on_disk(store)["lastRunAt"] == resumed.timestamp


def test_runs_stay_sorted_by_completion_time(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    for seconds in (5, 1, 9, 3, 7):
        store.record(make_record(seconds))
    timestamps = [entry["timestamp"] for entry in on_disk(store)["runs"]]
    assert timestamps == sorted(timestamps) and len(timestamps) == 5
    assert on_disk(store)["lastRunAt"] == iso_utc(BASE + 9)


def test_oldest_runs_roll_over_to_the_archive_without_loss(tmp_path: Path) -> None:
    store = make_store(tmp_path, keep_recent=5, archive_batch=3)
    records = [make_record(seconds) for seconds in range(20)]
    archive_before = b""
    for index, record in enumerate(records, start=1):
        store.record(record)
        state = run_ids(on_disk(store))
        archive = store.archive_path.read_bytes() if store.archive_path.exists() else b""
        archived = [json.loads(line)["runId"] for line in archive.splitlines()]
        assert archived + state == [r.run_id for r in records[:index]]
        assert len(state) <= 8
        assert archive.startswith(archive_before), "the archive is only appended to"
        archive_before = archive
    assert len(run_ids(on_disk(store))) == 8  # 20 = 4 + 4 + 4 archived, then 8 kept
    assert store.archive_path == store.state_path.with_name("state.archive.ndjson")


def test_a_hand_edited_state_is_parsed_again_not_appended_to_blindly(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.record(make_record(1))
    edited = on_disk(store)
    added_by_hand = make_record(2).to_json()
    edited["runs"].append(added_by_hand)
    store.state_path.write_text(json.dumps(edited, indent=2))
    later = make_record(3)
    store.record(later)
    assert on_disk(store)["runs"][1:] == [added_by_hand, later.to_json()]


@pytest.mark.parametrize(
    ("content", "kept_runs"),
    [(b'{"taskId": "x", "runs": [', 0), (b"[1, 2]", 0), (b'{"runs": [42, "VALID"]}', 1)],
    ids=["truncated", "wrong-shape", "one-bad-entry"],
)
def test_corrupt_state_is_kept_aside_reported_once_and_started_afresh(
    tmp_path: Path, content: bytes, kept_runs: int
) -> None:
    warnings: list[str] = []
    store = make_store(tmp_path, warnings)
    readable = make_record(1)
    content = content.replace(b'"VALID"', json.dumps(readable.to_json()).encode())
    store.state_path.parent.mkdir(parents=True)
    store.state_path.write_bytes(content)
    store.record(make_record(2))
    store.record(make_record(3))
    assert len(warnings) == 1
    assert f"state.json for task {TASK} was corrupt" in warnings[0]
    assert "starting a fresh history" in warnings[0]
    (kept,) = store.state_path.parent.glob("state.json.corrupt-*")
    assert kept.read_bytes() == content
    assert str(kept) in warnings[0]
    assert len(on_disk(store)["runs"]) == kept_runs + 2


def test_read_repairs_a_corrupt_state_when_the_lock_is_free(tmp_path: Path) -> None:
    warnings: list[str] = []
    store = make_store(tmp_path, warnings)
    store.state_path.parent.mkdir(parents=True)
    store.state_path.write_bytes(b"\x00\x01 not json")
    assert store.read()["runs"] == []
    assert store.read()["runs"] == []
    assert len(warnings) == 1
    assert on_disk(store)["runs"] == []
    assert len(list(store.state_path.parent.glob("state.json.corrupt-*"))) == 1
    record = make_record(1)
    store.record(record)
    assert on_disk(store)["runs"] == [record.to_json()]


def test_corrupt_pending_file_is_kept_aside_and_skipped(tmp_path: Path) -> None:
    warnings: list[str] = []
    store = make_store(tmp_path, warnings)
    store.pending_dir.mkdir(parents=True)
    (store.pending_dir / "broken.json").write_bytes(b'{"runId": ')
    record = make_record(1)
    store.record(record)
    assert run_ids(on_disk(store)) == [record.run_id]
    assert len(warnings) == 1 and "broken.json" in warnings[0]
    assert [path.name.split(".corrupt-")[0] for path in store.pending_dir.iterdir()] == [
        "broken.json"
    ]


def test_snapshot_is_kept_pending_when_the_lock_is_busy_and_merged_later(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first, second = make_record(1), make_record(2)
    with lock_held_elsewhere(store.lock_path):
        with pytest.raises(LockTimeoutError):
            store.record(first)
        assert store.pending_path(first).exists()
        assert store.read()["runs"] == []  # lock busy: nothing merged, nothing repaired
        with pytest.raises(LockTimeoutError):
            store.record(second)
    assert run_ids(store.read()) == [first.run_id, second.run_id]
    assert run_ids(on_disk(store)) == [first.run_id, second.run_id]
    assert not store.pending_path(first).exists()


def test_read_merges_pending_snapshots(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    record = make_record(1)
    with lock_held_elsewhere(store.lock_path), pytest.raises(LockTimeoutError):
        store.record(record)
    assert run_ids(store.read()) == [record.run_id]
    assert run_ids(on_disk(store)) == [record.run_id]
    assert list(store.pending_dir.iterdir()) == []


# --- many real processes ---------------------------------------------------------------------


def _record_when_told(root: Path, seconds: float, go: Any, outcomes: Any) -> None:
    record = make_record(seconds)
    go.wait(30)
    try:
        make_store(root).record(record)  # tight bound: 2 tries, 10 ms apart
    except LockTimeoutError:
        outcomes.put((record.run_id, "deferred"))
    else:
        outcomes.put((record.run_id, "recorded"))


def run_writers(root: Path, count: int, first: float = 0) -> dict[str, str]:
    """Start ``count`` writers at once; return run id -> outcome once all have exited."""
    go, outcomes = FORK.Event(), FORK.Queue()
    writers = [
        FORK.Process(target=_record_when_told, args=(root, first + index, go, outcomes))
        for index in range(count)
    ]
    for writer in writers:
        writer.start()
    go.set()
    results = dict(outcomes.get(timeout=60) for _ in writers)
    for writer in writers:
        writer.join(30)
    return results


@pytest.mark.slow
def test_zero_lost_snapshots_with_many_concurrent_writers(tmp_path: Path) -> None:
    outcomes = run_writers(tmp_path, 48)
    assert "deferred" in outcomes.values(), "the lock bound should run out for some writers"
    store = make_store(tmp_path)
    assert sorted(run_ids(on_disk(store))) == sorted(outcomes)
    assert list(store.pending_dir.iterdir()) == []


class SlowStore(TaskStateStore):
    """Holds the lock (default schedule) until ``release`` is set (or 60 s pass) before
    merging, then merges as usual."""

    def __init__(self, root: Path, in_lock: Any, release: Any) -> None:
        super().__init__(root / "out" / TASK, root / ".runs" / f"{TASK}.lock", TASK)
        self.in_lock, self.release = in_lock, release

    def _merge_pending_locked(self) -> int:
        self.in_lock.set()
        self.release.wait(60)
        return super()._merge_pending_locked()


def _slow_record(root: Path, seconds: float, in_lock: Any, release: Any) -> None:
    SlowStore(root, in_lock, release).record(make_record(seconds))


def test_writers_that_give_up_are_merged_by_the_holder(tmp_path: Path) -> None:
    in_lock, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_slow_record, args=(tmp_path, 0, in_lock, release))
    holder.start()
    assert in_lock.wait(10)
    outcomes = run_writers(tmp_path, 20, first=1)  # all while the holder holds the lock
    release.set()
    holder.join(30)
    assert set(outcomes.values()) == {"deferred"}
    assert len(run_ids(on_disk(make_store(tmp_path)))) == 21


@pytest.mark.slow
def test_holders_killed_with_sigkill_lose_nothing_and_block_nobody(tmp_path: Path) -> None:
    victims = []
    for index in range(3):
        in_lock = FORK.Event()
        victim = FORK.Process(
            target=_slow_record, args=(tmp_path, 100 + index, in_lock, FORK.Event())
        )
        victim.start()
        assert in_lock.wait(10)
        outcomes = run_writers(tmp_path, 10, first=10 * index)
        assert set(outcomes.values()) == {"deferred"}
        victim.kill()  # SIGKILL
        victim.join(10)
        victims.append(victim)
    state = make_store(tmp_path)
    assert all(json.loads(path.read_bytes()) for path in state.pending_dir.iterdir())
    survivor = make_record(200)
    state.record(survivor)
    assert len(run_ids(on_disk(state))) == 3 * 10 + 3 + 1
    assert list(state.pending_dir.iterdir()) == []


def test_prune_races_a_late_snapshot_never_undoes_a_pruned_mark(tmp_path: Path) -> None:
    """The mark is taken under the lock after every pending snapshot, and it is sticky: the
    run's own snapshot merged later (a finishing driver, the fallback directory) keeps it."""
    store = TaskStateStore(tmp_path / "out" / "t", tmp_path / "runs" / "t.lock", "t")
    record = RunRecord(
        "t", "2026-01-01T00-00-00-000Z-0000abcd", "p", "succeeded", "2026-01-01T00:00:01.000Z", "m"
    )
    store.record(record)
    waiting = store.pending_path(record)
    waiting.write_bytes(json.dumps(record.to_json()).encode())  # merged first, under the lock
    store.mark_pruned([record.to_json()])
    assert not waiting.exists()
    late = store.fallback_pending_dir / waiting.name
    late.parent.mkdir(parents=True)
    late.write_bytes(json.dumps(record.to_json()).encode())
    assert store.read()["runs"] == [{**record.to_json(), "pruned": True}]
    newer = record._replace(status="failed", timestamp="2026-01-01T00:00:09.000Z")
    store.record(newer)  # even a newer snapshot of a pruned run stays marked
    assert store.read()["runs"] == [{**newer.to_json(), "pruned": True}]
    unlisted = record._replace(run_id="2026-01-01T00-00-00-000Z-0000ffff")
    store.mark_pruned([unlisted.to_json()])  # a run missing from state.json is added, marked
    assert {entry["runId"]: entry.get("pruned") for entry in store.read()["runs"]} == {
        record.run_id: True,
        unlisted.run_id: True,
    }
