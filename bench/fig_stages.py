"""100 trivial stages: the orchestration overhead a stage, beyond spawning its shell.

overhead = (wall(100 stages) - wall(1 stage)) / 99 - median cost of
``subprocess.run(["/bin/sh", "-c", "true"])``, every term measured in this run, alternating
(shell calls, 1-stage run, 100-stage run) round after round. Walls are whole
``python -m codex_orchestrator start`` processes.

The TypeScript original is measured side by side only when ``CO_PEER_CMD`` names it (e.g.
``CO_PEER_CMD="node /path/to/codex-orchestrator.js"``): its ``start hundred --format json``
runs in the same repository, with the same config, in the same rounds. Without a peer the
total wall is reported with no peer verdict.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from typing import Any

from _harness import (
    BenchError,
    BenchRepo,
    Figure,
    Profile,
    alternate,
    bench_repo,
    median,
    progress,
    timed_run,
)

STAGES = 100
OVERHEAD_TARGET_MS = 2.0
SPEEDUP_TARGET = 3.0
PEER_ENV = "CO_PEER_CMD"


def _pipelines() -> list[dict[str, Any]]:
    def stage(index: int) -> dict[str, Any]:
        stage_id = f"s{index:03d}"
        return {"kind": "command", "id": stage_id, "title": stage_id, "command": "true"}

    return [
        {"id": "one", "title": "one", "stages": [stage(1)]},
        {"id": "hundred", "title": "hundred", "stages": [stage(i) for i in range(1, STAGES + 1)]},
    ]


class _Steps:
    def __init__(self, repo: BenchRepo, shell_per_round: int, peer: list[str] | None) -> None:
        self.repo, self.shell_per_round, self.peer = repo, shell_per_round, peer
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

    def run_peer(self) -> float:
        assert self.peer is not None
        argv = [*self.peer, "start", "hundred", "--format", "json"]
        elapsed, _ = timed_run(argv, env=self.repo.env, cwd=self.repo.root)
        return elapsed


def _peer_command() -> list[str] | None:
    command = os.environ.get(PEER_ENV, "").strip()
    return shlex.split(command) if command else None


def measure(profile: Profile) -> list[Figure]:
    """The per-stage overhead, and the total wall of 100 trivial stages (against the peer)."""
    peer = _peer_command()
    with bench_repo("stages") as repo:
        repo.write_config(_pipelines(), "one")
        steps = _Steps(repo, max(1, profile.shell_samples // profile.stages_rounds), peer)
        progress(
            f"stages: 1 vs {STAGES} trivial stages, {profile.stages_rounds} alternating rounds"
            + (f", peer `{shlex.join(peer)}` side by side" if peer else ", no peer")
        )
        steps.run("one", 1)  # warm-up: first run creates the task's directories and state
        rounds = [
            ("shell", steps.shell),
            ("one", lambda: steps.run("one", 1)),
            ("hundred", lambda: steps.run("hundred", STAGES)),
        ]
        if peer:
            steps.run_peer()  # the peer's warm-up, as for ours
            rounds.append(("peer", steps.run_peer))
        samples = alternate(profile.stages_rounds, rounds)
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
    return [
        Figure(
            key="stages.overhead",
            label=f"{STAGES} trivial stages: overhead/stage",
            measured=f"{overhead * 1000:.2f} ms",
            baseline=f"sh -c true {shell * 1000:.2f} ms",
            result=f"(W100-W1)/99 = {per_stage * 1000:.2f} ms/stage",
            target=f"< {OVERHEAD_TARGET_MS:.0f} ms/stage",
            ok=overhead * 1000 < OVERHEAD_TARGET_MS,
            values=values,
            note=(
                f"W1 = {one * 1000:.0f} ms, W100 = {hundred * 1000:.0f} ms (medians of "
                f"{profile.stages_rounds}); shell cost = median of {len(steps.shell_samples)} "
                "subprocess.run calls"
            ),
        ),
        _total_figure(hundred, samples.get("peer"), peer, profile.stages_rounds),
    ]


def _total_figure(
    hundred: float, peer_samples: list[float] | None, peer: list[str] | None, rounds: int
) -> Figure:
    label = f"{STAGES} trivial stages: total wall"
    if not peer_samples or not peer:
        return Figure(
            key="stages.total",
            label=label,
            measured=f"{hundred:.3f} s",
            baseline="no peer measured",
            result="",
            target=f">= {SPEEDUP_TARGET:.0f}x faster than the TypeScript original",
            ok=None,
            values={"wall_100_stages_s": hundred},
            note=f"set {PEER_ENV} to the TypeScript tool's command to measure it side by side",
        )
    peer_wall = median(peer_samples)
    speedup = peer_wall / hundred
    return Figure(
        key="stages.total",
        label=label,
        measured=f"{hundred:.3f} s",
        baseline=f"peer {peer_wall:.3f} s",
        result=f"{speedup:.2f}x faster",
        target=f">= {SPEEDUP_TARGET:.0f}x faster",
        ok=speedup >= SPEEDUP_TARGET,
        values={
            "wall_100_stages_s": hundred,
            "peer_wall_s": peer_wall,
            "peer_samples_s": peer_samples,
            "speedup": speedup,
        },
        note=f"peer `{shlex.join(peer)}` run side by side, medians of {rounds} rounds",
    )
