"""Resilience (docs/resilience.md): one group of figures, each in its own module.

- `fig_sigterm`: SIGTERM teardown, one parametrised figure (a cooperative stage; a stage that
  ignores SIGTERM, ended after ``settings.kill_grace_seconds``);
- `fig_timeout`: ``timeoutSeconds`` teardown;
- `fig_sigkill`: SIGKILL of ``start`` at random moments, then ``status`` and ``resume``;
- `fig_error_file`: the error-file bound with 50 MB of binary output;
- `fig_heartbeat`: the heartbeat's cadence and its throttled manifest writes.

Every orchestrated figure is a whole ``python -m codex_orchestrator`` child process in one temp
repo (one task id per run, so each run's files are its own).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from _harness import BenchError, BenchRepo, Figure, Profile, bench_repo, failed, progress
from fig_error_file import NOISE_COMMAND, error_file_figures
from fig_heartbeat import heartbeat_figures
from fig_sigkill import sigkill_figure
from fig_sigterm import TeardownCase, sigterm_figure
from fig_timeout import timeout_figure

GRACE_SECONDS = 1.0
TIMEOUT_SECONDS = 0.5
COOPERATIVE = "sleep 300"
IGNORES_TERM = 'trap "" TERM; while :; do sleep 1; done'
CHAIN_STAGES = 8
CHAIN_STAGE = "sleep 0.04"


@dataclass(frozen=True)
class _Rounds:
    """Rounds and sizes of one profile (full or quick)."""

    signal: int
    grace: int
    timeout: int
    kills: int
    noise: int
    heartbeat_runs: int
    heartbeat_seconds: float


def _rounds(profile: Profile) -> _Rounds:
    if profile.quick:
        return _Rounds(
            signal=3, grace=2, timeout=3, kills=4, noise=2, heartbeat_runs=2, heartbeat_seconds=3.0
        )
    return _Rounds(
        signal=5, grace=3, timeout=5, kills=10, noise=3, heartbeat_runs=3, heartbeat_seconds=6.0
    )


def _one_stage(pipeline: str, command: str, **extra: Any) -> dict[str, Any]:
    return {"id": pipeline, "stages": [{"id": pipeline, "command": command, **extra}]}


def _write_config(repo: BenchRepo, rounds: _Rounds) -> None:
    chain = [
        {"id": f"c{index:02d}", "command": CHAIN_STAGE} for index in range(1, CHAIN_STAGES + 1)
    ]
    pipelines = [
        _one_stage("one", "true"),
        _one_stage("cooperative", COOPERATIVE),
        _one_stage("stubborn", IGNORES_TERM),
        _one_stage("slow", COOPERATIVE, timeoutSeconds=TIMEOUT_SECONDS),
        {"id": "chain", "stages": chain},
        _one_stage("noisy", NOISE_COMMAND),
        _one_stage("beat", f"sleep {rounds.heartbeat_seconds:g}"),
    ]
    config = {
        "defaultPipeline": "one",
        "settings": {"kill_grace_seconds": GRACE_SECONDS},
        "pipelines": pipelines,
    }
    (repo.root / "codex.orchestrator.json").write_text(json.dumps(config, indent=2))


def _guarded(
    name: str, label: str, target: str, step: Callable[[], Sequence[Figure]]
) -> list[Figure]:
    """Run one figure; a broken one becomes an ERROR row without hiding the others."""
    try:
        return list(step())
    except (BenchError, OSError, ValueError, KeyError, subprocess.SubprocessError) as error:
        progress(f"resilience: {label}: FAILED: {type(error).__name__}: {error}")
        return [failed(name, label, target, f"{type(error).__name__}: {error}")]


def measure(profile: Profile) -> list[Figure]:
    """Every resilience figure (docs/resilience.md)."""
    rounds = _rounds(profile)
    cooperative = TeardownCase(
        key="resilience.sigterm",
        label="SIGTERM teardown (cooperative stage)",
        pipeline="cooperative",
        command=COOPERATIVE,
        grace_seconds=None,
        rounds=rounds.signal,
    )
    stubborn = TeardownCase(
        key="resilience.sigterm_ignored",
        label=f"SIGTERM teardown (stage ignores TERM, grace {GRACE_SECONDS:g} s)",
        pipeline="stubborn",
        command=IGNORES_TERM,
        grace_seconds=GRACE_SECONDS,
        rounds=rounds.grace,
    )
    figures: list[Figure] = []
    with bench_repo("resilience") as repo:
        _write_config(repo, rounds)
        steps: list[tuple[str, str, str, Callable[[], Sequence[Figure]]]] = [
            (
                case.key,
                case.label,
                "exit 143, cancelled, orphans = 0",
                lambda case=case: [sigterm_figure(repo, case)],
            )
            for case in (cooperative, stubborn)
        ]
        steps += [
            (
                "resilience.timeout",
                "timeout teardown",
                "exit 1, stage:<id>:timeout",
                lambda: [
                    timeout_figure(
                        repo,
                        pipeline="slow",
                        baseline_pipeline="one",
                        stage_id="slow",
                        command=COOPERATIVE,
                        timeout_seconds=TIMEOUT_SECONDS,
                        rounds=rounds.timeout,
                    )
                ],
            ),
            (
                "resilience.sigkill",
                "SIGKILL at random moments, then resume",
                f"{rounds.kills}/{rounds.kills}, 0 unparseable",
                lambda: [
                    sigkill_figure(
                        repo,
                        pipeline="chain",
                        stages=CHAIN_STAGES,
                        stage_command=CHAIN_STAGE,
                        kills=rounds.kills,
                    )
                ],
            ),
            (
                "resilience.error_file",
                "error file, stage printing 50 MB binary",
                "<= 10,240 B",
                lambda: error_file_figures(repo, pipeline="noisy", rounds=rounds.noise),
            ),
            (
                "resilience.heartbeat",
                "heartbeat cadence",
                "<= S/throttle + 1",
                lambda: heartbeat_figures(
                    repo,
                    pipeline="beat",
                    stage_seconds=rounds.heartbeat_seconds,
                    runs=rounds.heartbeat_runs,
                ),
            ),
        ]
        for name, label, target, step in steps:
            figures += _guarded(name, label, target, step)
    return figures
