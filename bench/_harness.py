"""Shared helpers for the benchmarks: timing, medians, temp repos, CLI invocation, the table.

Every figure is a `Figure`: the measured value, the raw baseline measured in the same run, the
compared result (usually a ratio), the target and a verdict. Timings are wall-clock
(`time.perf_counter`) around a whole child process, so nothing the orchestrator does is left
out of the figure.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PYTHON = sys.executable
#: The spec's default heartbeat tick; set explicitly so a developer's environment cannot skew runs.
HEARTBEAT_SECONDS = "5"
#: Where the CLI children keep their bytecode cache (set by run.py to a temp dir), so every run
#: starts with a warm cache as after `pip install`, whatever PYTHONDONTWRITEBYTECODE says.
PYCACHE_PREFIX: Path | None = None
#: A source tree whose package the CLI children run instead of the installed one
#: (``PYTHONPATH``); bench/compare.py sets it to an earlier commit's ``src``.
PACKAGE_SOURCE_ENV = "CODEX_BENCH_PACKAGE_SOURCE"
#: The 80-character line (plus newline) used by the `yes` generator.
LINE_80 = "0123456789" * 7 + "012345678"


@dataclass(frozen=True)
class Profile:
    """How long and how hard to measure: the full run or the CI smoke (`--quick`)."""

    quick: bool
    size_mb: int
    concurrency: int
    capture_rounds: int
    stages_rounds: int
    shell_samples: int
    cold_rounds: int
    state_writers: int
    state_rounds: int


def make_profile(quick: bool, size_mb: int | None, concurrency: int | None) -> Profile:
    """The default settings of a full or a quick run, with the command-line overrides."""
    if quick:
        return Profile(True, size_mb or 20, concurrency or 50, 3, 3, 30, 9, 20, 11)
    return Profile(False, size_mb or 300, concurrency or 500, 7, 5, 60, 15, 100, 51)


@dataclass
class Figure:
    """One row of the result table."""

    key: str
    label: str
    measured: str
    baseline: str
    result: str
    target: str
    ok: bool | None
    values: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    verdict_override: str | None = None

    @property
    def verdict(self) -> str:
        """PASS, MISS, or INFO (no target), N/A or ERROR."""
        if self.verdict_override is not None:
            return self.verdict_override
        if self.ok is None:
            return "INFO"
        return "PASS" if self.ok else "MISS"

    def to_json(self) -> dict[str, Any]:
        """The figure as a JSON object, verdict included."""
        document = asdict(self)
        document.pop("verdict_override")
        document["verdict"] = self.verdict
        return document


def unavailable(key: str, label: str, target: str, why: str) -> Figure:
    """A row for a figure that could not be measured in this checkout."""
    return Figure(
        key, label, "not available", "", "", target, None, note=why, verdict_override="N/A"
    )


def failed(key: str, label: str, target: str, why: str) -> Figure:
    """A row for a figure whose measurement broke."""
    return Figure(key, label, "error", "", "", target, False, note=why, verdict_override="ERROR")


def median(samples: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    if not samples:
        raise ValueError("no samples")
    return statistics.median(samples)


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the table)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed_run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Run ``argv`` to completion; return its wall time in seconds and the completed process."""
    started = time.perf_counter()
    completed = subprocess.run(
        list(argv),
        env=None if env is None else dict(env),
        cwd=cwd,
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if check and completed.returncode != 0:
        raise BenchError(describe_failure(argv, completed))
    return elapsed, completed


def describe_failure(argv: Sequence[str], completed: subprocess.CompletedProcess[bytes]) -> str:
    """A one-paragraph account of a failed child process."""
    tail = (completed.stderr or b"")[-600:].decode("utf-8", "replace").strip()
    out = (completed.stdout or b"")[-300:].decode("utf-8", "replace").strip()
    shown = " ".join(argv[:6]) + (" ..." if len(argv) > 6 else "")
    return f"`{shown}` exited {completed.returncode}: {tail or out or '(no output)'}"


def alternate(
    rounds: int, steps: Sequence[tuple[str, Callable[[], float]]]
) -> dict[str, list[float]]:
    """Run every step once per round, in order (baseline, measured, baseline, ...)."""
    samples: dict[str, list[float]] = {name: [] for name, _ in steps}
    for _ in range(rounds):
        for name, step in steps:
            samples[name].append(step())
    return samples


class BenchError(RuntimeError):
    """A measurement could not be taken (a child failed, an output was missing)."""


def cli_argv(*args: str) -> list[str]:
    """The orchestrator's command line, through the same interpreter as the bench."""
    return [PYTHON, "-m", "codex_orchestrator", *args]


def console_script() -> Path | None:
    """The installed `codex-orchestrator` script (beside the interpreter, else on PATH)."""
    beside = Path(PYTHON).parent / "codex-orchestrator"
    if beside.is_file():
        return beside
    found = shutil.which("codex-orchestrator")
    return Path(found) if found else None


@dataclass
class BenchRepo:
    """A throw-away git repository with a `codex.orchestrator.json`, and the env to run in it."""

    root: Path
    env: dict[str, str]

    def write_config(self, pipelines: Sequence[Mapping[str, Any]], default: str) -> None:
        """Write the config with these pipelines (`defaultPipeline` = ``default``)."""
        config = {"defaultPipeline": default, "pipelines": list(pipelines)}
        (self.root / "codex.orchestrator.json").write_text(json.dumps(config, indent=2))

    def start(
        self, *args: str, argv_prefix: Sequence[str] | None = None
    ) -> tuple[float, dict[str, Any]]:
        """Run `start ... --format json`; return its wall time and its JSON answer."""
        prefix = cli_argv() if argv_prefix is None else list(argv_prefix)
        argv = [*prefix, "start", *args, "--format", "json"]
        elapsed, completed = timed_run(argv, env=self.env, cwd=self.root)
        return elapsed, json.loads(completed.stdout)

    def manifest(self, answer: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest of a run, from the JSON answer of `start`."""
        document: dict[str, Any] = json.loads((self.root / answer["manifest"]).read_bytes())
        return document

    def run_dir(self, answer: Mapping[str, Any]) -> Path:
        """The artifact directory of a run."""
        return self.root / str(answer["artifact_root"])


def bench_env(root: Path) -> dict[str, str]:
    """The environment of an orchestrator run rooted at ``root``, free of the caller's overrides."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CODEX_ORCHESTRATOR_") and key != "MCP_RUNNER_TASK_ID"
    }
    env["CODEX_ORCHESTRATOR_ROOT"] = str(root)
    env["CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS"] = HEARTBEAT_SECONDS
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env.pop(PACKAGE_SOURCE_ENV, None)
    source = os.environ.get(PACKAGE_SOURCE_ENV)
    if source:
        env["PYTHONPATH"] = source
    if PYCACHE_PREFIX is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE_PREFIX)
    return env


@contextmanager
def bench_repo(prefix: str) -> Iterator[BenchRepo]:
    """A temp git repo under the temp dir (/tmp), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=f"codex-bench-{prefix}-"))
    try:
        if shutil.which("git"):
            subprocess.run(["git", "init", "-q", str(root)], check=True, capture_output=True)
        yield BenchRepo(root, bench_env(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def tree_bytes(path: Path) -> int:
    """The sum of the sizes of every file under ``path``."""
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def fmt_seconds(value: float) -> str:
    """Seconds with a unit that keeps three significant digits readable."""
    if value < 1.0:
        return f"{value * 1000:.1f} ms"
    return f"{value:.3f} s"


def fmt_mb(kib: float) -> str:
    """KiB (as VmHWM and `ru_maxrss` report on Linux) as MiB."""
    return f"{kib / 1024:.1f} MiB"


def render_table(figures: Sequence[Figure]) -> str:
    """The figures as an aligned text table, with the notes listed underneath."""
    header = ("figure", "measured", "baseline (same run)", "result", "target", "verdict")
    rows = [header] + [
        (f.label, f.measured, f.baseline, f.result, f.target, f.verdict) for f in figures
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))

    out = [line(header), "-+-".join("-" * width for width in widths)]
    out += [line(row) for row in rows[1:]]
    notes = [(index, f) for index, f in enumerate(figures, 1) if f.note]
    if notes:
        out.append("")
        out.append("notes:")
        out += [f"  - {f.label}: {f.note}" for _, f in notes]
    return "\n".join(out)
