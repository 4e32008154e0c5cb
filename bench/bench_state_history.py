"""Benchmark TaskStateStore: cost of recording a run as the history grows, and lock waits.

Usage (from the repo root): ``python bench/bench_state_history.py [K] [ROUNDS]``

1. Times ``record()`` (the whole call: pending snapshot, lock, merge, fsync) for a task whose
   history holds 10 runs and for one whose history holds 10,000 runs (``state.json`` near its
   largest size before a rollover, the rest archived), alternating between the two, and prints
   the medians and their ratio (target <= 1.5).
2. Starts K processes (default 100) that record one run each at the same moment, with the
   default lock schedule, and prints the lock-wait percentiles, how many ran out of retries,
   and whether ``state.json`` lists every run once they have all exited.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import codex_orchestrator  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from codex_orchestrator.errors import LockTimeoutError
from codex_orchestrator.persistence.task_state import (
    ARCHIVE_BATCH,
    KEEP_RECENT,
    RunRecord,
    TaskStateStore,
)
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.ids import new_run_id
from codex_orchestrator.util.jsonio import append_line, atomic_write_json
from codex_orchestrator.util.locks import FileLock

TASK = "0202-orchestrator-hardening"
SMALL, LARGE = 10, 10_000


class TimedLock(FileLock):
    """A FileLock that remembers how long its last `acquire` waited."""

    waited: float | None = None

    def acquire(self) -> float:
        self.waited = super().acquire()
        return self.waited


def make_record(stamp: float) -> RunRecord:
    run_id = new_run_id(stamp)
    return RunRecord(
        task_id=TASK,
        run_id=run_id,
        pipeline_id="diagnostics",
        status="succeeded",
        timestamp=iso_utc(stamp),
        manifest=f".runs/{TASK}/cli/{run_id}/manifest.json",
    )


def open_store(root: Path, name: str, lock: FileLock | None = None) -> TaskStateStore:
    return TaskStateStore(root / "out" / name, root / ".runs" / f"{name}.lock", TASK, lock=lock)


def seed_history(store: TaskStateStore, runs: int, in_state: int, start: float) -> None:
    """Write ``runs`` runs: the newest ``in_state`` in state.json, the others archived."""
    entries = [make_record(start + index).to_json() for index in range(runs)]
    store.state_path.parent.mkdir(parents=True, exist_ok=True)
    archived, recent = entries[: runs - in_state], entries[runs - in_state :]
    if archived:
        append_line(store.archive_path, "\n".join(json.dumps(entry) for entry in archived))
    document = {"taskId": TASK, "lastRunAt": recent[-1]["timestamp"], "runs": recent}
    atomic_write_json(store.state_path, document)


def time_record(store: TaskStateStore, stamp: float) -> float:
    started = time.perf_counter()
    store.record(make_record(stamp))
    return time.perf_counter() - started


def bench_history(root: Path, rounds: int) -> None:
    start = time.time() - 10 * LARGE
    small, large = open_store(root, "small"), open_store(root, "large")
    in_state = KEEP_RECENT + ARCHIVE_BATCH - rounds - 1
    seed_history(small, SMALL - 1, SMALL - 1, start)
    seed_history(large, LARGE - 1, in_state, start)
    stamp = time.time()
    for store in (small, large):  # warm-up: first write in the store's own layout
        store.record(make_record(stamp))
    timings: dict[str, list[float]] = {"small": [], "large": []}
    for index in range(rounds):
        stamp = time.time() + index
        timings["small"].append(time_record(small, stamp))
        timings["large"].append(time_record(large, stamp))
    small_ms = statistics.median(timings["small"]) * 1000
    large_ms = statistics.median(timings["large"]) * 1000
    print(
        f"state record: run {SMALL} = {small_ms:.2f} ms, run {LARGE} = {large_ms:.2f} ms, "
        f"ratio = {large_ms / small_ms:.2f} (target <= 1.5; median of {rounds} each, "
        f"state.json of run {LARGE} holds {len(large.read()['runs'])} runs)"
    )


def record_once(root: Path, ready: Any, go: Any, results: Any) -> None:
    lock = TimedLock(root / ".runs" / "concurrent.lock")
    store = open_store(root, "concurrent", lock=lock)
    record = make_record(time.time())
    ready.release()
    go.wait()
    try:
        store.record(record)
    except LockTimeoutError:
        results.put((record.run_id, None))
        return
    results.put((record.run_id, lock.waited))


def bench_concurrency(root: Path, processes: int) -> None:
    context = multiprocessing.get_context("fork")
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    workers = [
        context.Process(target=record_once, args=(root, ready, go, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    outcomes = [results.get() for _ in workers]
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    waits = sorted(waited for _, waited in outcomes if waited is not None)
    state_path = open_store(root, "concurrent").state_path
    listed = {entry["runId"] for entry in json.loads(state_path.read_bytes())["runs"]}
    lost = len({run_id for run_id, _ in outcomes} - listed)
    print(
        f"lock wait, {processes} concurrent writers: p50 = {_ms(waits, 0.5)}, "
        f"p90 = {_ms(waits, 0.9)}, p99 = {_ms(waits, 0.99)}, max = {_ms(waits, 1.0)}; "
        f"{processes - len(waits)} ran out of retries (snapshot deferred); "
        f"state.json lists {len(listed)}/{processes} runs, lost = {lost}; wall {elapsed:.2f} s"
    )


def _ms(sorted_values: list[float], fraction: float) -> str:
    if not sorted_values:
        return "n/a"
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return f"{sorted_values[index] * 1000:.1f} ms"


def main(argv: list[str]) -> None:
    processes = int(argv[1]) if len(argv) > 1 else 100
    rounds = int(argv[2]) if len(argv) > 2 else 51
    with tempfile.TemporaryDirectory(prefix="bench-state-") as temp:
        bench_history(Path(temp), rounds)
    with tempfile.TemporaryDirectory(prefix="bench-state-") as temp:
        bench_concurrency(Path(temp), processes)


if __name__ == "__main__":
    main(sys.argv)
