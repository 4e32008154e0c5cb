"""The Dask executor on a local cluster (two single-threaded worker processes).

- overhead a stage: per-stage wall of a 20-stage run minus a 1-stage run, on Dask, against
  the same on the local executor (both whole ``start`` processes, alternating rounds);
- streamed output: a stage printing SIZE bytes (at least 100 MB) on Dask, MB/s over the stage's
  recorded time (start to end as the manifest has them, so start-up noise is left out), against
  the same stage run locally; peak RSS of the orchestrator (``_rss.py``), of the worker process,
  and of the worker-side supervisor (sampled from ``/proc`` while it streams);
- the transports considered for streaming, side by side: the executor's direct socket against
  Dask pub/sub and a Dask Queue carrying the same chunks (docs/executors.md says why);
- 100 independent trivial stages (a graph, 2 at a time) on 2 workers against the same 100
  locally, as a ratio.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime
from typing import Any

from _harness import (
    BENCH_DIR,
    PYTHON,
    BenchError,
    BenchRepo,
    Figure,
    Profile,
    alternate,
    bench_repo,
    fmt_mb,
    fmt_seconds,
    median,
    progress,
    timed_run,
    unavailable,
)

OVERHEAD_TARGET_MS = 30.0
THROUGHPUT_TARGET_MBS = 100.0
RSS_TARGET_MB = 80.0
SHORT_STAGES = 20
MANY_STAGES = 100
CHUNK = 256 * 1024
MIN_STREAM_MB = 100
RSS_MARKER = re.compile(rb"BENCH_MAXRSS_KB=(\d+)")


def _pipelines(size: int) -> list[dict[str, Any]]:
    def trivial(count: int) -> list[dict[str, str]]:
        return [{"id": f"s{index:03d}", "command": "true"} for index in range(1, count + 1)]

    return [
        {"id": "one", "stages": trivial(1)},
        {"id": "short", "stages": trivial(SHORT_STAGES)},
        {
            "id": "many",
            "maxParallel": 2,
            "stages": [{**stage, "needs": []} for stage in trivial(MANY_STAGES)],
        },
        {"id": "stream", "stages": [{"id": "out", "command": f"head -c {size} /dev/zero"}]},
    ]


class _Runs:
    """Whole ``start`` runs of the bench repository on either executor."""

    def __init__(self, repo: BenchRepo, scheduler: str) -> None:
        self.repo = repo
        self.dask_args = ("--executor", "dask", "--scheduler", scheduler)

    def wall(self, pipeline: str, on_dask: bool) -> float:
        elapsed, answer = self.repo.start(pipeline, *(self.dask_args if on_dask else ()))
        if answer.get("status") != "succeeded":
            raise BenchError(f"{pipeline} run on {'dask' if on_dask else 'local'}: {answer}")
        return elapsed

    def stage_seconds(self, answer: dict[str, Any]) -> float:
        """How long the run's only stage took as recorded here (start to end, on this machine)."""
        entry = self.repo.manifest(answer)["commands"][0]
        started, ended = (
            datetime.fromisoformat(entry[key].replace("Z", "+00:00"))
            for key in ("started_at", "completed_at")
        )
        return (ended - started).total_seconds()

    def local_stream(self) -> float:
        """Stage seconds of the streaming stage run locally."""
        _, answer = self.repo.start("stream")
        return self.stage_seconds(answer)

    def rss_run(self, pipeline: str) -> tuple[float, int]:
        """Stage seconds and the orchestrator's peak RSS (KiB) of a Dask run, via ``_rss.py``."""
        rss = str(BENCH_DIR / "_rss.py")
        argv = [PYTHON, rss, "start", pipeline, *self.dask_args, "--format", "json"]
        _, completed = timed_run(argv, env=self.repo.env, cwd=self.repo.root)
        found = RSS_MARKER.search(completed.stderr)
        if found is None:
            raise BenchError("no peak RSS reported by _rss.py")
        return self.stage_seconds(json.loads(completed.stdout)), int(found.group(1))


class _SupervisorPeaks:
    """Samples the peak RSS (VmHWM) of the workers' fork servers and of the supervisors they
    fork, while they live."""

    def __init__(self, worker_pids: list[int]) -> None:
        import threading

        self.worker_pids = set(worker_pids)
        self.peak_kib = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _SupervisorPeaks:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    def _sample(self) -> None:
        while not self.stop.wait(0.01):
            for pid in self._supervisors():
                self.peak_kib = max(self.peak_kib, _status_kib(pid, "VmHWM:"))

    def _supervisors(self) -> list[int]:
        servers = [pid for worker in self.worker_pids for pid in _children(worker)]
        return servers + [pid for server in servers for pid in _children(server)]


def _children(pid: int) -> list[int]:
    """Children of ``pid``, listed by whichever of its threads started them."""
    found = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as children:
                found += [int(child) for child in children.read().split()]
        except OSError:
            continue
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith(field)), 0)
    except (OSError, ValueError):
        return 0


def _transport_mbs(client: Any, size: int) -> dict[str, float]:
    """MB/s of ``size`` bytes sent from a worker task in CHUNK pieces: over a direct TCP socket
    (the executor's transport), and through Dask itself: its event topics
    (``log_event``/``subscribe_topic``, Dask's pub/sub) and a Dask Queue."""
    import threading

    from distributed import Queue, get_worker

    def publish(total: int, chunk: int) -> int:
        worker = get_worker()
        block = b"\0" * chunk
        for _ in range(total // chunk):
            worker.log_event("codex-bench", block)
        worker.log_event("codex-bench", b"")
        return total

    def enqueue(total: int, chunk: int) -> int:
        queue = Queue("codex-bench-queue")
        block = b"\0" * chunk
        for _ in range(total // chunk):
            queue.put(block)
        queue.put(b"")
        return total

    def send(address: tuple[str, int], total: int, chunk: int) -> int:
        import socket

        block = b"\0" * chunk
        with socket.create_connection(address) as channel:
            for _ in range(total // chunk):
                channel.sendall(block)
        return total

    import socket

    rates: dict[str, float] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        started = time.perf_counter()
        future = client.submit(send, listener.getsockname()[:2], size, CHUNK, pure=False)
        channel, _ = listener.accept()
        buffer = bytearray(1 << 20)
        with channel:
            while channel.recv_into(buffer):
                pass
        future.result()
        rates["socket"] = size / 1e6 / (time.perf_counter() - started)
    done = threading.Event()
    client.subscribe_topic("codex-bench", lambda event: event[1] or done.set())
    started = time.perf_counter()
    client.submit(publish, size, CHUNK, pure=False).result()
    done.wait(120)
    rates["events (pub/sub)"] = size / 1e6 / (time.perf_counter() - started)
    client.unsubscribe_topic("codex-bench")
    queue = Queue("codex-bench-queue", client=client)
    started = time.perf_counter()
    future = client.submit(enqueue, size, CHUNK, pure=False)
    while queue.get(timeout=120):
        pass
    future.result()
    rates["queue"] = size / 1e6 / (time.perf_counter() - started)
    return rates


def measure(profile: Profile) -> list[Figure]:
    """Overhead a stage, streaming rate and memory, and 100 stages on Dask against local."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        why = "install the extra: pip install -e '.[dask]'"
        return [unavailable("dask", "Dask executor", "", why)]
    # Below ~100 MB the stream lasts less than the noise of a whole run's wall time.
    size = max(profile.size_mb, MIN_STREAM_MB) * 1024 * 1024
    rounds = 3 if profile.quick else 5
    progress(f"dask: local cluster of 2 worker processes, {rounds} alternating rounds")
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
        bench_repo("dask") as repo,
    ):
        repo.write_config(_pipelines(size), "one")
        runs = _Runs(repo, cluster.scheduler_address)
        runs.wall("one", on_dask=False)
        runs.wall("one", on_dask=True)
        samples = alternate(
            rounds,
            [
                ("local_one", lambda: runs.wall("one", False)),
                ("local_short", lambda: runs.wall("short", False)),
                ("dask_one", lambda: runs.wall("one", True)),
                ("dask_short", lambda: runs.wall("short", True)),
            ],
        )
        roundtrip = median([_task_roundtrip(client) for _ in range(30)])
        progress(f"dask: streaming {size // 2**20} MiB, then {MANY_STAGES} stages each way")
        local_stream = median([runs.local_stream() for _ in range(rounds)])
        worker_pids = list(client.run(os.getpid).values())
        with _SupervisorPeaks(worker_pids) as supervisors:
            streamed = [runs.rss_run("stream") for _ in range(rounds)]
        supervisor_kib = supervisors.peak_kib
        worker_kib = max(_status_kib(pid, "VmHWM:") for pid in worker_pids)
        transports = _transport_mbs(client, 64 * 1024 * 1024)
        many = alternate(
            max(1, rounds - 2),
            [
                ("local", lambda: runs.wall("many", False)),
                ("dask", lambda: runs.wall("many", True)),
            ],
        )
    return _figures(
        samples,
        roundtrip,
        local_stream,
        streamed,
        worker_kib,
        supervisor_kib,
        transports,
        many,
        size,
    )


def _task_roundtrip(client: Any) -> float:
    """Seconds for one empty Dask task, submit to result: Dask's own share of a stage."""
    started = time.perf_counter()
    client.submit(time.time, pure=False).result()
    return time.perf_counter() - started


def _figures(
    samples: dict[str, list[float]],
    roundtrip: float,
    local_stream: float,
    streamed: list[tuple[float, int]],
    worker_kib: int,
    supervisor_kib: int,
    transports: dict[str, float],
    many: dict[str, list[float]],
    size: int,
) -> list[Figure]:
    def per_stage(kind: str) -> float:
        return (median(samples[f"{kind}_short"]) - median(samples[f"{kind}_one"])) / (
            SHORT_STAGES - 1
        )

    local_stage, dask_stage = per_stage("local"), per_stage("dask")
    overhead = dask_stage - local_stage
    stream_seconds = median([seconds for seconds, _ in streamed])
    orchestrator_kib = max(kib for _, kib in streamed)
    rate = size / 1e6 / stream_seconds
    local_rate = size / 1e6 / local_stream
    ratio = median(many["dask"]) / median(many["local"])
    rss_ok = max(orchestrator_kib, supervisor_kib) / 1024 < RSS_TARGET_MB
    return [
        Figure(
            "dask_overhead",
            "Dask: overhead a stage",
            fmt_seconds(dask_stage),
            f"local {fmt_seconds(local_stage)}; empty Dask task {fmt_seconds(roundtrip)}",
            f"+{overhead * 1000:.1f} ms",
            f"< {OVERHEAD_TARGET_MS:g} ms",
            overhead * 1000 < OVERHEAD_TARGET_MS,
            {
                "dask_per_stage_s": dask_stage,
                "local_per_stage_s": local_stage,
                "dask_task_roundtrip_s": roundtrip,
                **samples,
            },
        ),
        Figure(
            "dask_stream",
            "Dask: streamed output",
            f"{rate:.0f} MB/s",
            f"local {local_rate:.0f} MB/s",
            f"{rate / local_rate:.2f}x local",
            f">= {THROUGHPUT_TARGET_MBS:g} MB/s",
            rate >= THROUGHPUT_TARGET_MBS,
            {
                "bytes": size,
                "stage_s": [wall for wall, _ in streamed],
                "local_stage_s": local_stream,
            },
        ),
        Figure(
            "dask_rss",
            "Dask: peak RSS while streaming",
            f"orchestrator {fmt_mb(orchestrator_kib)}, supervisor {fmt_mb(supervisor_kib)}",
            f"worker process {fmt_mb(worker_kib)}",
            "",
            f"< {RSS_TARGET_MB:g} MB",
            rss_ok,
            {
                "orchestrator_kib": orchestrator_kib,
                "supervisor_kib": supervisor_kib,
                "worker_kib": worker_kib,
            },
            note="the worker process's own peak includes Dask itself (the baseline column)",
        ),
        Figure(
            "dask_transport",
            "Dask: transports, worker to here",
            f"socket {transports['socket']:.0f} MB/s",
            ", ".join(
                f"{name} {mbs:.0f} MB/s" for name, mbs in transports.items() if name != "socket"
            ),
            f"{transports['socket'] / max(v for k, v in transports.items() if k != 'socket'):.1f}x "
            "the best Dask transport",
            "",
            None,
            transports,
            note="raw transfer of the same 256 KiB chunks from a worker task, nothing written",
        ),
        Figure(
            "dask_many",
            f"Dask: {MANY_STAGES} stages on 2 workers",
            fmt_seconds(median(many["dask"])),
            f"local {fmt_seconds(median(many['local']))}",
            f"{ratio:.2f}x local",
            "",
            None,
            many,
            note="a graph of independent stages, 2 at a time (2 workers; locally maxParallel 2)",
        ),
    ]
