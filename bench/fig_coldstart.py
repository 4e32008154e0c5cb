"""Cold start of `plan` and `status RUN`, against a bare interpreter start.

Each round runs, for every command, ``python -c pass`` (same interpreter, same flags, same
environment) and then the command, so baseline and measured samples alternate. Runs use a
warm bytecode cache (as after ``pip install``), written to the bench's own cache directory;
one extra row shows `plan` without a bytecode cache for the package, as an environment with
``PYTHONDONTWRITEBYTECODE=1`` and an editable install runs it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from _harness import (
    PYTHON,
    BenchError,
    Figure,
    Profile,
    bench_repo,
    cli_argv,
    console_script,
    median,
    progress,
    timed_run,
    unavailable,
)

RATIO_TARGET = 5.0
ABSOLUTE_TARGET_S = 0.100


def _runner(argv: Sequence[str], env: dict[str, str], cwd: Path) -> Callable[[], float]:
    def run() -> float:
        elapsed, _ = timed_run(argv, env=env, cwd=cwd)
        return elapsed

    return run


def measure(profile: Profile) -> list[Figure]:
    """The cold-start figures: `plan`/`status` via ``-m`` and via the console script."""
    figures: list[Figure] = []
    with bench_repo("cold") as repo:
        repo.write_config([{"id": "one", "stages": [{"id": "s001", "command": "true"}]}], "one")
        _, answer = repo.start()
        run_id = answer["run_id"]
        commands: list[tuple[str, str, list[str]]] = [
            ("cold.plan.module", "python -m codex_orchestrator plan", cli_argv("plan")),
            (
                "cold.status.module",
                "python -m codex_orchestrator status RUN",
                cli_argv("status", run_id),
            ),
        ]
        script = console_script()
        if script is not None:
            commands += [
                ("cold.plan.script", "codex-orchestrator plan", [str(script), "plan"]),
                (
                    "cold.status.script",
                    "codex-orchestrator status RUN",
                    [str(script), "status", run_id],
                ),
            ]
        bare = _runner([PYTHON, "-c", "pass"], repo.env, repo.root)
        runners = {label: _runner(argv, repo.env, repo.root) for _, label, argv in commands}
        keys = {label: key for key, label, _ in commands}
        for run in [bare, *runners.values()]:  # warm-up: bytecode cache, page cache
            run()
        progress(f"cold start: {len(commands)} commands, {profile.cold_rounds} alternating rounds")
        baseline: list[float] = []
        samples: dict[str, list[float]] = {label: [] for label in runners}
        for _ in range(profile.cold_rounds):
            for label, run in runners.items():
                baseline.append(bare())
                samples[label].append(run())
        base = median(baseline)
        for label, values in samples.items():
            wall = median(values)
            figures.append(
                Figure(
                    keys[label],
                    f"cold start: {label}",
                    f"{wall * 1000:.1f} ms",
                    f"python -c pass {base * 1000:.1f} ms",
                    f"{wall / base:.2f}x",
                    f"<= {RATIO_TARGET:.0f}x and < {ABSOLUTE_TARGET_S * 1000:.0f} ms",
                    wall / base <= RATIO_TARGET and wall < ABSOLUTE_TARGET_S,
                    {
                        "median_s": wall,
                        "bare_python_s": base,
                        "ratio": wall / base,
                        "samples_s": values,
                        "bare_samples_s": baseline,
                    },
                )
            )
        if script is None:
            figures.append(
                unavailable(
                    "cold.script",
                    "cold start: codex-orchestrator (console script)",
                    f"<= {RATIO_TARGET:.0f}x",
                    "no codex-orchestrator script beside the interpreter "
                    "or on PATH (pip install -e . first)",
                )
            )
        figures.append(_without_bytecode_cache(repo.env, repo.root, profile))
    if figures:
        figures[0].note = (
            f"median of {profile.cold_rounds} runs each, alternating with "
            "python -c pass; warm bytecode cache (PYTHONPYCACHEPREFIX)"
        )
    return figures


def _without_bytecode_cache(env: dict[str, str], cwd: Path, profile: Profile) -> Figure:
    """`plan` with the package compiled from source at every start (stdlib keeps its cache)."""
    where = [PYTHON, "-c", "import codex_orchestrator as c; print(c.__file__)"]
    with tempfile.TemporaryDirectory(prefix="codex-bench-nopyc-") as tmp:
        # the package the CLI children run (bench/compare.py may point them at another tree)
        package = Path(timed_run(where, env=env, cwd=cwd)[1].stdout.decode().strip()).parent
        shutil.copytree(
            package, Path(tmp) / package.name, ignore=shutil.ignore_patterns("__pycache__")
        )
        raw = {key: value for key, value in env.items() if key != "PYTHONPYCACHEPREFIX"}
        raw["PYTHONDONTWRITEBYTECODE"] = "1"
        raw["PYTHONPATH"] = os.pathsep.join(filter(None, [tmp, env.get("PYTHONPATH")]))
        _, probe = timed_run(where, env=raw, cwd=cwd)
        if not probe.stdout.decode().strip().startswith(tmp):
            raise BenchError(f"the uncached copy was not imported: {probe.stdout!r}")
        bare = _runner([PYTHON, "-c", "pass"], raw, cwd)
        plan = _runner(cli_argv("plan"), raw, cwd)
        rounds = max(3, profile.cold_rounds // 2)
        base_samples, plan_samples = [], []
        for _ in range(rounds):
            base_samples.append(bare())
            plan_samples.append(plan())
    base, wall = median(base_samples), median(plan_samples)
    return Figure(
        "cold.plan.no_bytecode",
        "cold start: plan, no .pyc for the package",
        f"{wall * 1000:.1f} ms",
        f"python -c pass {base * 1000:.1f} ms",
        f"{wall / base:.2f}x",
        "(information)",
        None,
        {"median_s": wall, "bare_python_s": base, "ratio": wall / base},
        note=(
            f"PYTHONDONTWRITEBYTECODE=1 and a copy of the package without __pycache__ "
            f"(as an editable install in such an environment runs), median of {rounds}"
            + (
                ""
                if os.environ.get("PYTHONDONTWRITEBYTECODE") is None
                else "; the caller's environment sets PYTHONDONTWRITEBYTECODE"
            )
        ),
    )
