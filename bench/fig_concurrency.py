"""N concurrent `start` runs of one task: is every run recorded?

All N ``python -m codex_orchestrator start --task T`` processes are started at once (Popen in a
loop), then waited for. Once all have exited: entries in ``out/T/state.json``, lines in
``.runs/T/metrics.json``, parseable terminal manifests, exit codes. Lost snapshots are the run
ids of the manifests that ``state.json`` does not list. Baseline: N concurrent bare interpreters
that each run the same stage (``subprocess.run(["/bin/sh", "-c", "true"])``), to show the floor
that process start-up alone sets on this machine.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import PYTHON, BenchRepo, Figure, Profile, bench_repo, cli_argv, progress

TASK = "bench-concurrent"
TERMINAL = {"succeeded", "failed", "cancelled"}
BASELINE_PROGRAM = "import subprocess; subprocess.run(['/bin/sh', '-c', 'true'], check=True)"


def _spawn_all(
    argv: Sequence[str], count: int, repo: BenchRepo, logs: Path
) -> tuple[float, list[int]]:
    """Start ``count`` copies of ``argv`` at once, wait for all; return wall time, exit codes."""
    processes: list[subprocess.Popen[bytes]] = []
    started = time.perf_counter()
    for index in range(count):
        with open(logs / f"{index}.out", "wb") as out, open(logs / f"{index}.err", "wb") as err:
            processes.append(
                subprocess.Popen(
                    list(argv),
                    env=repo.env,
                    cwd=repo.root,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                )
            )
    codes = [process.wait() for process in processes]
    return time.perf_counter() - started, codes


def _census(repo: BenchRepo) -> dict[str, Any]:
    """What the runs of TASK left behind."""
    state_path = repo.root / "out" / TASK / "state.json"
    state_ids: list[str] = []
    if state_path.exists():
        state_ids = [entry["runId"] for entry in json.loads(state_path.read_bytes())["runs"]]
    metrics_lines = 0
    metrics_path = repo.root / ".runs" / TASK / "metrics.json"
    if metrics_path.exists():
        for line in metrics_path.read_bytes().splitlines():
            if line.strip():
                json.loads(line)
                metrics_lines += 1
    manifest_ids: set[str] = set()
    unparseable = not_terminal = 0
    for path in (repo.root / ".runs" / TASK / "cli").glob("*/manifest.json"):
        try:
            manifest = json.loads(path.read_bytes())
        except ValueError:
            unparseable += 1
            continue
        if manifest.get("status") in TERMINAL:
            manifest_ids.add(manifest["run_id"])
        else:
            not_terminal += 1
    return {
        "state_entries": len(state_ids),
        "state_unique": len(set(state_ids)),
        "metrics_lines": metrics_lines,
        "terminal_manifests": len(manifest_ids),
        "unparseable_manifests": unparseable,
        "non_terminal_manifests": not_terminal,
        "missing_from_state": sorted(manifest_ids - set(state_ids)),
    }


def measure(profile: Profile) -> list[Figure]:
    """The concurrency figures: recorded runs (0 lost) and the wall time."""
    count = profile.concurrency
    with (
        bench_repo("concurrency") as repo,
        tempfile.TemporaryDirectory(prefix="codex-bench-logs-") as tmp,
    ):
        logs = Path(tmp)
        repo.write_config([{"id": "one", "stages": [{"id": "s001", "command": "true"}]}], "one")
        repo.start("--task", "warmup")
        progress(f"concurrency: {count} concurrent bare interpreters (baseline)")
        base_wall, base_codes = _spawn_all([PYTHON, "-c", BASELINE_PROGRAM], count, repo, logs)
        progress(f"concurrency: {count} concurrent `start --task {TASK}`")
        wall, codes = _spawn_all(
            cli_argv("start", "--task", TASK, "--format", "json"), count, repo, logs
        )
        census = _census(repo)
        warned = [
            line
            for index in range(count)
            for line in (logs / f"{index}.err").read_text("utf-8", "replace").splitlines()
            if "warn" in line.lower()
        ]
        warnings = sum(
            1
            for index in range(count)
            if "warn" in (logs / f"{index}.err").read_text("utf-8", "replace").lower()
        )
    failed_exits = sum(1 for code in codes if code != 0)
    lost = count - census["state_unique"]
    all_recorded = (
        lost == 0
        and not census["missing_from_state"]
        and census["state_entries"] == count
        and census["metrics_lines"] == count
        and census["terminal_manifests"] == count
        and census["unparseable_manifests"] == 0
        and failed_exits == 0
    )
    values = {
        **census,
        "runs": count,
        "lost": lost,
        "nonzero_exits": failed_exits,
        "runs_warning_on_stderr": warnings,
        "sample_warnings": warned[:5],
        "wall_s": wall,
        "baseline_wall_s": base_wall,
        "baseline_nonzero_exits": sum(1 for code in base_codes if code != 0),
    }
    return [
        Figure(
            "concurrency.recorded",
            f"{count} concurrent starts: records",
            f"lost = {lost}",
            f"{count} runs started",
            f"state {census['state_unique']}/{count}, metrics {census['metrics_lines']}/{count}, "
            f"manifests {census['terminal_manifests']}/{count}",
            "all recorded (0 lost)",
            all_recorded,
            values,
            note=(
                f"{failed_exits} non-zero exits, {census['unparseable_manifests']} unparseable "
                f"and {census['non_terminal_manifests']} non-terminal manifests, "
                f"{len(census['missing_from_state'])} manifests missing from state.json, "
                f"{warnings} runs printed a warning"
                + (f" (e.g. {warned[0].strip()[:160]!r})" if warned else "")
                + "; single round"
            ),
        ),
        Figure(
            "concurrency.wall",
            f"{count} concurrent starts: wall",
            f"{wall:.2f} s",
            f"{count} x (python + sh true) {base_wall:.2f} s",
            f"{wall / base_wall:.2f}x",
            "(information)",
            None,
            {"wall_s": wall, "baseline_wall_s": base_wall, "ratio": wall / base_wall},
        ),
    ]
