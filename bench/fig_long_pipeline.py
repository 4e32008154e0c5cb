"""Long pipelines: the orchestration cost a stage must not grow with the pipeline's length.

per-stage(N) = (wall(N stages) - wall(1 stage)) / (N - 1) - median cost of
``subprocess.run(["/bin/sh", "-c", "true"])``, for N = 100 and N = 2,000 trivial stages, each a
whole ``python -m codex_orchestrator start`` process, measured alternately in this run. A
manifest rewritten at every transition makes the 2,000-stage figure about 20 times the
100-stage one (each write costs O(N)); deferred transition writes keep it flat. The manifest
writes of each run are read from its ``heartbeat_stats`` event.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from _harness import BenchError, BenchRepo, Figure, Profile, alternate, bench_repo, median, progress

SHORT, LONG = 100, 2000
#: The long pipeline's per-stage overhead may exceed the short one's by this factor at most.
GROWTH_TARGET = 1.5


def _pipeline(name: str, stages: int) -> dict[str, Any]:
    return {"id": name, "stages": [{"id": f"s{i:05d}", "command": "true"} for i in range(stages)]}


def _manifest_writes(repo: BenchRepo, answer: dict[str, Any]) -> int:
    events = (repo.root / answer["artifact_root"] / "runner.ndjson").read_text().splitlines()
    for line in events:
        event = json.loads(line)
        if event.get("event") == "heartbeat_stats":
            return int(event.get("manifest_writes_total", -1))
    return -1


def measure(profile: Profile) -> list[Figure]:
    """Per-stage overhead at 2,000 stages against 100 stages."""
    rounds = 1 if profile.quick else 3
    writes: dict[int, int] = {}
    shell_samples: list[float] = []
    with bench_repo("long") as repo:
        repo.write_config(
            [_pipeline("one", 1), _pipeline("short", SHORT), _pipeline("long", LONG)], "one"
        )

        def run(name: str, stages: int) -> float:
            elapsed, answer = repo.start(name)
            if answer.get("status") != "succeeded":
                raise BenchError(f"{name} run ended {answer.get('status')}")
            writes[stages] = _manifest_writes(repo, answer)
            return elapsed

        def shell() -> float:
            for _ in range(20):
                started = time.perf_counter()
                subprocess.run(["/bin/sh", "-c", "true"], check=True)
                shell_samples.append(time.perf_counter() - started)
            return median(shell_samples[-20:])

        progress(f"long pipeline: 1, {SHORT} and {LONG} trivial stages, {rounds} round(s)")
        run("one", 1)
        samples = alternate(
            rounds,
            [
                ("shell", shell),
                ("one", lambda: run("one", 1)),
                ("short", lambda: run("short", SHORT)),
                ("long", lambda: run("long", LONG)),
            ],
        )
    one, short, long = (median(samples[key]) for key in ("one", "short", "long"))
    spawn = median(shell_samples)
    short_overhead = (short - one) / (SHORT - 1) - spawn
    long_overhead = (long - one) / (LONG - 1) - spawn
    growth = long_overhead / short_overhead if short_overhead > 0 else float("inf")
    values = {
        "wall_1_s": one,
        "wall_short_s": short,
        "wall_long_s": long,
        "shell_true_s": spawn,
        "overhead_short_ms": short_overhead * 1000,
        "overhead_long_ms": long_overhead * 1000,
        "manifest_writes_short": writes.get(SHORT),
        "manifest_writes_long": writes.get(LONG),
    }
    return [
        Figure(
            "long.overhead",
            f"{LONG} stages: overhead/stage",
            f"{long_overhead * 1000:.2f} ms",
            f"{SHORT} stages {short_overhead * 1000:.2f} ms",
            f"{growth:.2f}x the {SHORT}-stage figure",
            f"<= {GROWTH_TARGET:g}x",
            growth <= GROWTH_TARGET,
            values,
            note=(
                f"W1 {one:.2f} s, W{SHORT} {short:.2f} s, W{LONG} {long:.2f} s; manifest writes "
                f"{writes.get(SHORT)} ({SHORT} stages), {writes.get(LONG)} ({LONG} stages)"
            ),
        )
    ]
