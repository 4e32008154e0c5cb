"""Capture of a stage that prints a lot: wall time, peak RSS of the orchestrator, bytes on disk.

Two generators print exactly ``size_mb`` MB (10^6 bytes) to stdout:

- ``python``: a Python loop writing 100-byte log lines (a realistic, CPU-bound log producer);
- ``yes``: ``yes <80-char line> | head -c N`` (a producer as fast as the pipe and disk allow, the
  worst case for any per-byte overhead of the capture).

Baseline: the SAME command as ``/bin/sh -c 'CMD > file'``. Orchestrated: the whole
``python -m codex_orchestrator start`` of a one-stage pipeline (interpreter start, config,
manifest, heartbeat, metrics, state, fsyncs: everything), and the stage alone (the manifest's
``duration_seconds`` of the command). Runs alternate baseline / orchestrated; medians are shown.

Peak RSS: the CLI run in-process under ``bench/_rss.py`` (``VmHWM`` of that process, threads
included, stage processes excluded), for the full size and for 10 MB, against a bare
interpreter's own peak.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from typing import Any

from _harness import (
    BENCH_DIR,
    LINE_80,
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
    tree_bytes,
)
from _rss import MARKER

WALL_TARGET = 1.2
RSS_TARGET_MIB = 40.0
FLAT_TOLERANCE_MIB = 2.0
DISK_TARGET = 1.01
SMALL_MB = 10


def generator(kind: str, size_bytes: int) -> str:
    """The shell command of a stage that prints exactly ``size_bytes`` bytes."""
    if kind == "yes":
        return f"yes {LINE_80} | head -c {size_bytes}"
    if size_bytes % 100:
        raise ValueError("the python generator prints whole 100-byte lines")
    line = "2026-01-01T00:00:00.000Z INFO bench.worker step done; " + "x" * 45
    # fd 1 reopened with default buffering, so PYTHONUNBUFFERED in the caller's env cannot
    # turn the generator into one write(2) per line.
    program = (
        f'out = open(1, "w", closefd=False)\nw = out.write\nline = "{line}" + chr(10)\n'
        f"for _ in range({size_bytes // 100}):\n    w(line)\nout.flush()\n"
    )
    return f"{shlex.quote(PYTHON)} -c {shlex.quote(program)}"


def _pipelines(size_bytes: int) -> list[dict[str, Any]]:
    return [
        {"id": f"cap-{kind}-{label}", "stages": [{"id": "gen", "command": generator(kind, size)}]}
        for kind in ("python", "yes")
        for label, size in (("full", size_bytes), ("small", SMALL_MB * 1_000_000))
    ]


class _Capture:
    """Alternating baseline/orchestrated runs of one generator, with what they left on disk."""

    def __init__(self, repo: BenchRepo, kind: str, size_bytes: int) -> None:
        self.repo, self.kind, self.size = repo, kind, size_bytes
        self.command = generator(kind, size_bytes)
        self.stage_seconds: list[float] = []
        self.disk_ratios: list[float] = []
        self.disk_bytes: list[int] = []

    def baseline(self) -> float:
        target = self.repo.root / "baseline.out"
        script = f"{self.command} > {shlex.quote(str(target))}"
        os.sync()  # untimed: no run pays for the write-back of the one before it
        elapsed, _ = timed_run(["/bin/sh", "-c", script], env=self.repo.env, cwd=self.repo.root)
        written = target.stat().st_size
        target.unlink()
        if written != self.size:
            raise BenchError(f"baseline wrote {written} bytes, expected {self.size}")
        return elapsed

    def orchestrated(self) -> float:
        os.sync()
        elapsed, answer = self.repo.start(f"cap-{self.kind}-full")
        if answer.get("status") != "succeeded":
            raise BenchError(f"capture run ended {answer.get('status')}: {answer}")
        command = self.repo.manifest(answer)["commands"][0]
        if command.get("stdout_bytes", self.size) != self.size:
            raise BenchError(f"manifest records {command['stdout_bytes']} bytes, not {self.size}")
        self.stage_seconds.append(float(command["duration_seconds"]))
        run_dir = self.repo.run_dir(answer)
        on_disk = tree_bytes(run_dir)
        self.disk_bytes.append(on_disk)
        self.disk_ratios.append(on_disk / self.size)
        shutil.rmtree(run_dir)
        return elapsed


def peak_rss_kib(repo: BenchRepo, pipeline: str) -> int:
    """Peak RSS (KiB) of `start PIPELINE` run in-process under bench/_rss.py."""
    argv = [PYTHON, str(BENCH_DIR / "_rss.py"), "start", pipeline, "--format", "json"]
    _, completed = timed_run(argv, env=repo.env, cwd=repo.root)
    match = re.search(rf"{MARKER}(\d+)", completed.stderr.decode("utf-8", "replace"))
    if match is None:
        raise BenchError("bench/_rss.py printed no peak RSS")
    shutil.rmtree(repo.run_dir(json.loads(completed.stdout)))
    return int(match.group(1))


def bare_rss_kib(repo: BenchRepo) -> int:
    """Peak RSS (KiB) of a bare interpreter (bench/_rss.py without a command), the baseline of
    the RSS figures."""
    _, completed = timed_run([PYTHON, str(BENCH_DIR / "_rss.py")], env=repo.env, cwd=repo.root)
    match = re.search(rf"{MARKER}(\d+)", completed.stderr.decode("utf-8", "replace"))
    if match is None:
        raise BenchError("bench/_rss.py printed no peak RSS")
    return int(match.group(1))


def _wall_figures(capture: _Capture, samples: dict[str, list[float]], mb: int) -> list[Figure]:
    base = median(samples["baseline"])
    whole = median(samples["orchestrated"])
    stage = median(capture.stage_seconds)
    name = f"capture {mb} MB ({capture.kind})"
    values = {
        "generator": capture.kind,
        "command": capture.command,
        "bytes_printed": capture.size,
        "baseline_samples_s": samples["baseline"],
        "cli_samples_s": samples["orchestrated"],
        "stage_samples_s": capture.stage_seconds,
    }
    return [
        Figure(
            f"capture.{capture.kind}.cli_wall",
            f"{name}: whole CLI wall",
            fmt_seconds(whole),
            f"sh -c 'CMD > file' {fmt_seconds(base)}",
            f"{whole / base:.2f}x",
            f"<= {WALL_TARGET}x",
            whole / base <= WALL_TARGET,
            {**values, "baseline_s": base, "cli_s": whole, "ratio": whole / base},
            note=(
                f"median of {len(samples['baseline'])} alternating runs each; CLI wall "
                "includes interpreter start, config, manifest/metrics/state writes and fsyncs"
            ),
        ),
        Figure(
            f"capture.{capture.kind}.stage_wall",
            f"{name}: stage only",
            fmt_seconds(stage),
            f"sh -c 'CMD > file' {fmt_seconds(base)}",
            f"{stage / base:.2f}x",
            f"<= {WALL_TARGET}x",
            stage / base <= WALL_TARGET,
            {"baseline_s": base, "stage_s": stage, "ratio": stage / base},
            note="stage = manifest commands[0].duration_seconds (spawn to exit, ms resolution)",
        ),
    ]


def measure(profile: Profile) -> list[Figure]:
    """Every capture figure: wall (two generators), peak RSS (full and 10 MB), bytes on disk."""
    size = profile.size_mb * 1_000_000
    figures: list[Figure] = []
    with bench_repo("capture") as repo:
        repo.write_config(_pipelines(size), "cap-python-full")
        captures = {}
        for kind in ("python", "yes"):
            progress(
                f"capture: {profile.size_mb} MB via {kind} generator, "
                f"{profile.capture_rounds} alternating rounds"
            )
            capture = _Capture(repo, kind, size)
            samples = alternate(
                profile.capture_rounds,
                [("baseline", capture.baseline), ("orchestrated", capture.orchestrated)],
            )
            captures[kind] = capture
            figures += _wall_figures(capture, samples, profile.size_mb)

        progress("capture: peak RSS of the orchestrator (bench/_rss.py)")
        bare = bare_rss_kib(repo)
        full = max(peak_rss_kib(repo, "cap-python-full") for _ in range(2))
        small = max(peak_rss_kib(repo, "cap-python-small") for _ in range(2))
        delta_mib = (full - small) / 1024
        figures.append(
            Figure(
                "capture.rss_full",
                f"peak RSS, capture {profile.size_mb} MB",
                fmt_mb(full),
                f"bare python {fmt_mb(bare)}",
                f"+{fmt_mb(full - bare)} over bare",
                f"< {RSS_TARGET_MIB:.0f} MiB",
                full / 1024 < RSS_TARGET_MIB,
                {"peak_kib": full, "bare_python_kib": bare},
                note="VmHWM of the orchestrator process (threads included, stages excluded); "
                "max of 2 runs",
            )
        )
        figures.append(
            Figure(
                "capture.rss_small",
                f"peak RSS, capture {SMALL_MB} MB (flatness)",
                fmt_mb(small),
                f"bare python {fmt_mb(bare)}",
                f"{profile.size_mb} MB run is {delta_mib:+.1f} MiB",
                f"< {RSS_TARGET_MIB:.0f} MiB, flat (+-{FLAT_TOLERANCE_MIB:.0f} MiB)",
                small / 1024 < RSS_TARGET_MIB and abs(delta_mib) <= FLAT_TOLERANCE_MIB,
                {"peak_kib": small, "full_minus_small_mib": delta_mib},
            )
        )

        capture = captures["python"]
        worst = max(capture.disk_ratios)
        worst_bytes = max(capture.disk_bytes)
        figures.append(
            Figure(
                "capture.disk",
                f"bytes on disk / printed, {profile.size_mb} MB",
                f"{worst_bytes:,} B",
                f"printed {size:,} B",
                f"{worst:.4f}x",
                f"<= {DISK_TARGET}x",
                worst <= DISK_TARGET,
                {"bytes_on_disk": worst_bytes, "bytes_printed": size, "ratio": worst},
                note="sum of file sizes in the run directory (logs, manifest, events, summary); "
                "worst of the python-generator runs",
            )
        )
    return figures
