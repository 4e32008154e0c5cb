"""Graph pipelines (stages with ``needs``, see docs/graphs.md), each figure against a baseline
measured in the same run:

- ``parallel``: 8 independent ``sleep 0.5`` stages with ``maxParallel: 4``; the wall of the
  whole ``start`` against the critical path (2 waves of 0.5 s = 1.0 s) plus one cold start
  (the wall of a one-stage ``true`` run). Target: within 1.15x.
- ``overhead``: 200 trivial stages as a chain of fan-outs (a hub, then 9 stages that need it,
  then the next hub needs those 9, ...) against the same 200 stages in sequence; the
  difference a stage. Target: at most 1 ms a stage.
- ``output``: 4 stages at once, each printing N MB; the orchestrator's peak RSS (in-process
  under ``bench/_rss.py``) against a bare interpreter, and the logs against the bytes
  printed. Target: under 40 MB, logs equal.
- ``transitions``: 32 stages released by one FIFO at the same moment, so that they finish
  within milliseconds of each other; every transition must be in the final manifest and
  ``runner.ndjson`` must hold exactly one line per event.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _harness import (
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
)
from _procs import (
    find_manifest,
    kill_group_quietly,
    load_json,
    recorded_groups,
    spawn_cli,
    stop_cli,
)
from fig_capture import bare_rss_kib, peak_rss_kib

PARALLEL_STAGES = 8
PARALLEL_BOUND = 4
SLEEP_SECONDS = 0.5
CRITICAL_PATH_SECONDS = SLEEP_SECONDS * PARALLEL_STAGES / PARALLEL_BOUND
PARALLEL_TARGET = 1.15
HUBS, FAN = 20, 9
OVERHEAD_TARGET_MS = 1.0
OUTPUT_STAGES = 4
RSS_TARGET_MB = 40
BURST_STAGES = 32
BURST_TASK = "burst"
#: Each burst stage (bash, for its clock builtin: nothing is started after the release) reads
#: the ``go`` FIFO: all of them see its end of file at the same moment, when the bench closes
#: its write end, then print when they ended and exit.
BURST_COMMAND = "exec bash -c 'read -r _ < go; echo $EPOCHREALTIME'"
#: How long the bench holds the FIFO open, so that every stage has opened it before the end.
BURST_HOLD_SECONDS = 0.5


def _stage(stage_id: str, command: str = "true", **extra: Any) -> dict[str, Any]:
    return {"id": stage_id, "command": command, **extra}


def _fan_chain() -> list[dict[str, Any]]:
    """HUBS x (1 hub + FAN stages): hub k needs the FAN stages of hub k-1, which need it."""
    stages: list[dict[str, Any]] = []
    previous: list[str] = []
    for hub in range(HUBS):
        hub_id = f"h{hub:02d}"
        stages.append(_stage(hub_id, needs=previous))
        previous = [f"h{hub:02d}-{leaf}" for leaf in range(FAN)]
        stages += [_stage(leaf_id, needs=[hub_id]) for leaf_id in previous]
    return stages


def _pipelines(output_mb: int) -> list[dict[str, Any]]:
    size = output_mb * 1_000_000
    printer = f"yes 0123456789012345678901234567890123456789 | head -c {size}"
    fan = _fan_chain()
    return [
        {"id": "one", "stages": [_stage("noop")]},
        {
            "id": "parallel",
            "maxParallel": PARALLEL_BOUND,
            "stages": [
                _stage(f"s{i}", f"sleep {SLEEP_SECONDS:g}", needs=[])
                for i in range(PARALLEL_STAGES)
            ],
        },
        {"id": "fan", "stages": fan},
        {"id": "sequence", "stages": [_stage(stage["id"]) for stage in fan]},
        {
            "id": "output",
            "maxParallel": OUTPUT_STAGES,
            "stages": [_stage(f"o{i}", printer, needs=[]) for i in range(OUTPUT_STAGES)],
        },
        {
            "id": "burst",
            "maxParallel": BURST_STAGES,
            "stages": [_stage(f"b{i:02d}", BURST_COMMAND, needs=[]) for i in range(BURST_STAGES)],
        },
    ]


def _wall(repo: BenchRepo, pipeline: str, stages: int) -> float:
    elapsed, answer = repo.start(pipeline)
    if answer.get("status") != "succeeded":
        raise BenchError(f"{pipeline} run ended {answer.get('status')}")
    manifest = repo.manifest(answer)
    if [entry["status"] for entry in manifest["commands"]] != ["succeeded"] * stages:
        raise BenchError(f"{pipeline} run did not succeed in every stage")
    return elapsed


def _parallel_figure(repo: BenchRepo, rounds: int) -> Figure:
    progress(
        f"graph: {PARALLEL_STAGES} x sleep {SLEEP_SECONDS:g} with maxParallel {PARALLEL_BOUND}, "
        f"{rounds} rounds"
    )
    samples = alternate(
        rounds,
        [
            ("cold", lambda: _wall(repo, "one", 1)),
            ("parallel", lambda: _wall(repo, "parallel", PARALLEL_STAGES)),
        ],
    )
    cold, wall = median(samples["cold"]), median(samples["parallel"])
    bound = CRITICAL_PATH_SECONDS + cold
    ratio = wall / bound
    return Figure(
        key="graph.parallel",
        label=f"{PARALLEL_STAGES} x sleep {SLEEP_SECONDS:g}, maxParallel {PARALLEL_BOUND}",
        measured=fmt_seconds(wall),
        baseline=f"critical path {CRITICAL_PATH_SECONDS:g} s + cold start {fmt_seconds(cold)}",
        result=f"{ratio:.3f}x",
        target=f"<= {PARALLEL_TARGET}x",
        ok=ratio <= PARALLEL_TARGET,
        values={"wall_s": samples["parallel"], "cold_start_s": samples["cold"], "ratio": ratio},
        note=f"medians of {rounds}; cold start = wall of a one-stage `true` run",
    )


def _overhead_figure(repo: BenchRepo, rounds: int) -> Figure:
    stages = HUBS * (FAN + 1)
    progress(f"graph: {stages} stages as a chain of fan-outs vs in sequence, {rounds} rounds")
    samples = alternate(
        rounds,
        [
            ("sequence", lambda: _wall(repo, "sequence", stages)),
            ("fan", lambda: _wall(repo, "fan", stages)),
        ],
    )
    sequence, fan = median(samples["sequence"]), median(samples["fan"])
    per_stage_ms = (fan - sequence) / stages * 1000
    return Figure(
        key="graph.overhead",
        label=f"{stages}-stage graph vs sequence",
        measured=fmt_seconds(fan),
        baseline=f"in sequence {fmt_seconds(sequence)}",
        result=f"{per_stage_ms:+.2f} ms/stage",
        target=f"<= +{OVERHEAD_TARGET_MS:g} ms/stage",
        ok=per_stage_ms <= OVERHEAD_TARGET_MS,
        values={"graph_s": samples["fan"], "sequence_s": samples["sequence"]},
        note=(
            f"{HUBS} hubs x {FAN} stages needing each, `true` stages, default maxParallel "
            f"(CPU count); medians of {rounds}"
        ),
    )


def _output_figures(repo: BenchRepo, output_mb: int) -> list[Figure]:
    progress(f"graph: {OUTPUT_STAGES} stages at once printing {output_mb} MB each")
    printed = OUTPUT_STAGES * output_mb * 1_000_000
    _, answer = repo.start("output")
    manifest = repo.manifest(answer)
    logged = sum((repo.root / entry["log_path"]).stat().st_size for entry in manifest["commands"])
    recorded = sum(int(entry["stdout_bytes"]) for entry in manifest["commands"])
    for entry in manifest["commands"]:
        (repo.root / entry["log_path"]).unlink()
    bare = bare_rss_kib(repo)
    peak = max(peak_rss_kib(repo, "output") for _ in range(2))
    return [
        Figure(
            key="graph.output_rss",
            label=f"peak RSS, {OUTPUT_STAGES} stages x {output_mb} MB at once",
            measured=fmt_mb(peak),
            baseline=f"bare interpreter {fmt_mb(bare)}",
            result=f"+{fmt_mb(peak - bare)}",
            target=f"< {RSS_TARGET_MB} MB",
            ok=peak < RSS_TARGET_MB * 1024,
            values={"peak_rss_kib": peak, "bare_rss_kib": bare},
            note="VmHWM of the orchestrator (threads included, stages excluded), max of 2",
        ),
        Figure(
            key="graph.output_logs",
            label=f"logs of {OUTPUT_STAGES} stages at once vs bytes printed",
            measured=f"{logged:,} B",
            baseline=f"printed {printed:,} B",
            result=f"manifest stdout_bytes {recorded:,} B",
            target="= printed",
            ok=logged == printed == recorded,
            values={"logged": logged, "printed": printed, "recorded": recorded},
        ),
    ]


def _open_writer(fifo: Path, deadline: float) -> int:
    """The FIFO's write end, once a reader has opened it (never blocking past ``deadline``)."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:  # ENXIO: no reader yet
            if time.monotonic() > deadline:
                raise BenchError(f"no burst stage opened {fifo.name}: {error}") from None
            time.sleep(0.005)


def _burst(repo: BenchRepo) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """One burst run: release its 32 stages at once; its manifest, events and finish spread."""
    fifo = repo.root / "go"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    proc = spawn_cli(repo, "start", "burst", "--task", BURST_TASK, "--format", "json")
    groups: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(groups) < BURST_STAGES:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"burst stages did not all start (exit {proc.poll()})")
            path = find_manifest(repo, BURST_TASK)
            if path is not None:
                try:
                    groups = recorded_groups(load_json(path))
                except ValueError:
                    groups = []
            time.sleep(0.01)
        release = _open_writer(fifo, deadline)
        time.sleep(BURST_HOLD_SECONDS)
        os.close(release)  # every stage reads end of file now
        out, err = proc.communicate(timeout=60)
    finally:
        stop_cli(proc)
        for pgid in groups:
            kill_group_quietly(pgid)
    if proc.returncode != 0:
        raise BenchError(f"burst run exited {proc.returncode}: {err[-300:]!r}")
    answer = json.loads(out)
    manifest = repo.manifest(answer)
    events_path = repo.root / answer["log_path"]
    events = [json.loads(line) for line in events_path.read_bytes().splitlines() if line.strip()]
    ends = [float(entry["summary"]) for entry in manifest["commands"]]
    return manifest, events, max(ends) - min(ends)


def _transitions_figure(repo: BenchRepo) -> Figure:
    progress(f"graph: {BURST_STAGES} stages finishing at the same moment")
    manifest, events, spread = _burst(repo)
    problems = []
    for entry in manifest["commands"]:
        if entry["status"] != "succeeded" or not entry["started_at"] or not entry["completed_at"]:
            problems.append(f"{entry['id']}: {entry['status']}")
    kinds = Counter(event["event"] for event in events)
    per_stage = Counter(
        (event["event"], event["stage_id"]) for event in events if "stage_id" in event
    )
    expected = {("stage_started", f"b{i:02d}") for i in range(BURST_STAGES)} | {
        ("stage_finished", f"b{i:02d}") for i in range(BURST_STAGES)
    }
    if set(per_stage) != expected or set(per_stage.values()) != {1}:
        problems.append(f"stage events {dict(per_stage)}")
    if kinds["run_started"] != 1 or kinds["run_finished"] != 1:
        problems.append(f"run events {dict(kinds)}")
    lines = len(events)
    return Figure(
        key="graph.transitions",
        label=f"{BURST_STAGES} stages finishing at once: records",
        measured=f"{len(manifest['commands']) - len(problems)}/{BURST_STAGES} stages recorded",
        baseline=f"stages ended within {spread * 1000:.1f} ms",
        result=f"{lines} runner.ndjson lines, {kinds['stage_finished']} stage_finished",
        target="every transition recorded, one line per event",
        ok=not problems,
        values={"spread_s": spread, "events": dict(kinds), "problems": problems},
        note=(
            "stages block reading one FIFO whose write end the bench closes once all run; "
            "spread = last minus first stage end (their own clocks)"
            + (f"; problems: {'; '.join(problems)}" if problems else "")
        ),
    )


def measure(profile: Profile) -> list[Figure]:
    """The graph pipeline figures of the README "Performance" table."""
    rounds = 3 if profile.quick else 7
    output_mb = 10 if profile.quick else 50
    with bench_repo("graph") as repo:
        repo.write_config(_pipelines(output_mb), "one")
        _wall(repo, "one", 1)  # warm-up: the first run creates the task's directories
        return [
            _parallel_figure(repo, rounds),
            _overhead_figure(repo, rounds),
            *_output_figures(repo, output_mb),
            _transitions_figure(repo),
        ]
