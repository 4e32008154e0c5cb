"""Measure the quality bars of the README "Performance" table, each against a raw baseline taken in the same run.

Usage (from the repo root, after ``pip install -e .``)::

    python bench/run.py                 # full: 300 MB capture, 500 concurrent runs (~3-5 min)
    python bench/run.py --quick         # CI smoke: 20 MB, 50 concurrent runs (< 60 s)
    python bench/run.py --json out.json --only capture,stages

``python bench/compare.py REV`` runs these figures for this checkout and for commit REV in turn.

Prints a table (figure, measured, baseline, result, target, PASS/MISS) on stdout; progress
goes to stderr. Exit status: 0, or 1 when a measurement broke (ERROR) or, with ``--strict``,
when a figure missed its target.

Figures (one module each): ``fig_capture`` (capture wall, peak RSS, bytes on disk),
``fig_stages`` (100 trivial stages), ``fig_coldstart`` (plan/status start-up),
``fig_concurrency`` (N concurrent starts of one task), ``fig_state_history`` (runs
``bench_state_history.py``), ``fig_resilience`` (teardown on SIGTERM and on
timeouts, SIGKILL at random moments then resume, error-file bound, heartbeat cadence; one
module per figure), ``fig_long_pipeline`` (per-stage overhead at 2,000 stages against 100),
``fig_graph`` (graph pipelines: parallel stages, graph overhead, output of concurrent stages,
simultaneous transitions), ``fig_view`` (capture speed with the live view on, under a pty,
and off), ``fig_report`` (``report`` and ``logs --follow`` at 2,000 stages against 200, and
``report.html``'s size bound), ``fig_cache`` (stage cache: a ``"git"`` lookup over 50,000 files against
``git status``, hashing against ``sha256sum``, peak RSS hashing 1 GB, 4 lookups over 10,000
files against a 1-stage run). Every
CLI child runs with a warm bytecode cache of the bench's own (``PYTHONPYCACHEPREFIX`` in a temp
dir) and the default heartbeat interval (5 s), unless a figure says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import _harness
import fig_capture
import fig_coldstart
import fig_concurrency
import fig_dask
import fig_graph
import fig_long_pipeline
import fig_resilience
import fig_stages
import fig_state_history
import fig_view
from _harness import Figure, Profile, failed, make_profile, progress, render_table

FIGURES: dict[str, tuple[str, Callable[[Profile], list[Figure]]]] = {
    "capture": ("capture / RSS / disk", fig_capture.measure),
    "stages": ("100 trivial stages", fig_stages.measure),
    "cold": ("cold start", fig_coldstart.measure),
    "concurrency": ("concurrent starts", fig_concurrency.measure),
    "state": ("state history", fig_state_history.measure),
    "resilience": ("resilience", fig_resilience.measure),
    "dask": ("Dask executor", fig_dask.measure),
    "long": ("long pipelines", fig_long_pipeline.measure),
    "graph": ("graph pipelines", fig_graph.measure),
    "runctl": ("run control", lambda profile: __import__("fig_runctl").measure(profile)),
    "view": ("live view capture", fig_view.measure),
    "mcp": ("MCP server", lambda profile: __import__("fig_mcp").measure(profile)),
    "report": ("report and follow", lambda profile: __import__("fig_report").measure(profile)),
    "cache": ("stage cache", lambda profile: __import__("fig_cache").measure(profile)),
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short smoke version (20 MB, 50 concurrent runs, fewer rounds)",
    )
    parser.add_argument(
        "--size-mb",
        type=int,
        metavar="MB",
        help="bytes printed by the capture stage, in MB (default 300; quick 20)",
    )
    parser.add_argument(
        "--concurrency", type=int, metavar="N", help="concurrent start runs (default 500; quick 50)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save the figures here")
    parser.add_argument(
        "--only", metavar="NAMES", help=f"comma-separated subset of: {', '.join(FIGURES)}"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a figure is a MISS")
    args = parser.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(FIGURES)
        if unknown:
            parser.error(
                f"unknown figure(s) {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}"
            )
    if args.size_mb is not None and args.size_mb < 1:
        parser.error("--size-mb must be at least 1")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def run_figures(profile: Profile, names: Sequence[str]) -> tuple[list[Figure], dict[str, float]]:
    """Measure the named figure groups; a group that breaks becomes an ERROR row."""
    figures: list[Figure] = []
    seconds: dict[str, float] = {}
    for name in names:
        title, measure = FIGURES[name]
        started = time.perf_counter()
        try:
            figures += measure(profile)
        except Exception as error:  # one broken figure must not hide the others
            progress(f"{title}: FAILED\n{traceback.format_exc()}")
            figures.append(failed(name, title, "", f"{type(error).__name__}: {error}"))
        seconds[name] = time.perf_counter() - started
        progress(f"{title}: done in {seconds[name]:.1f} s")
    return figures, seconds


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    try:
        import codex_orchestrator
    except ImportError:
        print("codex_orchestrator is not importable: run `pip install -e .` first", file=sys.stderr)
        return 2
    profile = make_profile(args.quick, args.size_mb, args.concurrency)
    names = args.only.split(",") if args.only else list(FIGURES)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="codex-bench-pycache-") as pycache:
        _harness.PYCACHE_PREFIX = Path(pycache)
        figures, seconds = run_figures(profile, names)
    total = time.perf_counter() - started
    header = (
        f"codex-orchestrator {codex_orchestrator.__version__} bench "
        f"({'quick' if profile.quick else 'full'}): python {platform.python_version()}, "
        f"{os.cpu_count()} cores, capture {profile.size_mb} MB, "
        f"concurrency {profile.concurrency}; took {total:.0f} s; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(header)
    print()
    print(render_table(figures))
    if args.json:
        document = {
            "header": header,
            "profile": vars(profile),
            "python": sys.version,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "seconds": {"total": total, **seconds},
            "figures": [figure.to_json() for figure in figures],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    verdicts = {figure.verdict for figure in figures}
    if "ERROR" in verdicts or (args.strict and "MISS" in verdicts):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
