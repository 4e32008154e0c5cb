"""100 trivial stages: the orchestration overhead a stage, beyond spawning its shell.

overhead = (wall(100 stages) - wall(1 stage)) / 99 - median cost of
``subprocess.run(["/bin/sh", "-c", "true"])``, every term measured in this run, alternating
(shell calls, 1-stage run, 100-stage run) round after round. Walls are whole
``python -m codex_orchestrator start`` processes.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from _harness import BenchError, BenchRepo, Figure, Profile, alternate, bench_repo, median, progress

STAGES = 100
OVERHEAD_TARGET_MS = 3.0
TYPESCRIPT_SECONDS = 0.75
SPEEDUP_TARGET = 2.0


def _pipelines() -> list[dict[str, Any]]:
    return [
        {"id": "one", "stages": [{"id": "s001", "command": "true"}]},
        {
            "id": "hundred",
            "stages": [{"id": f"s{index:03d}", "command": "true"} for index in range(1, STAGES + 1)],
        },
    ]


class _Steps:
    def __init__(self, repo: BenchRepo, shell_per_round: int) -> None:
        self.repo, self.shell_per_round = repo, shell_per_round
        self.shell_samples: list[float] = []

    def shell(self) -> float:
        for _ in range(self.shell_per_round):
            started = time.perf_counter()
            subprocess.run(["/bin/sh", "-c", "true"], check=True)
            self.shell_samples.append(time.perf_counter() - started)
        return median(self.shell_samples[-self.shell_per_round :])

    def run(self, pipeline: str, stages: int) -> float:
        elapsed, answer = self.repo.start(pipeline)
        if answer.get("status") != "succeeded":
            raise BenchError(f"{pipeline} run ended {answer.get('status')}")
        recorded = len(self.repo.manifest(answer)["commands"])
        if recorded != stages:
            raise BenchError(f"{pipeline} run recorded {recorded} stages, expected {stages}")
        return elapsed


def measure(profile: Profile) -> list[Figure]:
    """The per-stage overhead and the total wall of 100 trivial stages."""
    with bench_repo("stages") as repo:
        repo.write_config(_pipelines(), "one")
        steps = _Steps(repo, max(1, profile.shell_samples // profile.stages_rounds))
        progress(f"stages: 1 vs {STAGES} trivial stages, {profile.stages_rounds} alternating rounds")
        steps.run("one", 1)  # warm-up: first run creates the task's directories and state
        samples = alternate(
            profile.stages_rounds,
            [
                ("shell", steps.shell),
                ("one", lambda: steps.run("one", 1)),
                ("hundred", lambda: steps.run("hundred", STAGES)),
            ],
        )
    one, hundred = median(samples["one"]), median(samples["hundred"])
    shell = median(steps.shell_samples)
    per_stage = (hundred - one) / (STAGES - 1)
    overhead = per_stage - shell
    values = {
        "wall_1_stage_s": one,
        "wall_100_stages_s": hundred,
        "shell_true_s": shell,
        "per_stage_s": per_stage,
        "overhead_per_stage_s": overhead,
        "samples_1_stage_s": samples["one"],
        "samples_100_stages_s": samples["hundred"],
        "shell_samples": len(steps.shell_samples),
    }
    speedup = TYPESCRIPT_SECONDS / hundred
    return [
        Figure(
            "stages.overhead", f"{STAGES} trivial stages: overhead/stage",
            f"{overhead * 1000:.2f} ms", f"sh -c true {shell * 1000:.2f} ms",
            f"(W100-W1)/99 = {per_stage * 1000:.2f} ms/stage",
            f"< {OVERHEAD_TARGET_MS:.0f} ms/stage", overhead * 1000 < OVERHEAD_TARGET_MS, values,
            note=(f"W1 = {one * 1000:.0f} ms, W100 = {hundred * 1000:.0f} ms (medians of "
                  f"{profile.stages_rounds}); shell cost = median of {len(steps.shell_samples)} "
                  "subprocess.run calls"),
        ),
        Figure(
            "stages.total", f"{STAGES} trivial stages: total wall",
            f"{hundred:.3f} s", f"TypeScript original ~{TYPESCRIPT_SECONDS} s",
            f"{speedup:.2f}x faster", f">= {SPEEDUP_TARGET:.0f}x faster "
            f"(<= {TYPESCRIPT_SECONDS / SPEEDUP_TARGET:.3f} s)", speedup >= SPEEDUP_TARGET,
            {"wall_100_stages_s": hundred, "typescript_s": TYPESCRIPT_SECONDS, "speedup": speedup},
            note="the TypeScript figure is the one measured earlier on this kind of machine, "
                 "not re-run here",
        ),
    ]
