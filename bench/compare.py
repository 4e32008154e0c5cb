"""Measure bench figures side by side for this checkout and an earlier commit.

Usage (from the repo root, after ``pip install -e .``)::

    python bench/compare.py REV --only cold,stages,capture [--rounds 3] [--quick]

REV's package (``git archive REV src``) is unpacked in a temp dir. Then ``bench/run.py --only
... --json`` of THIS checkout runs ``--rounds`` times for each package in turn (this tree, REV,
this tree, REV, ...); the CLI processes it measures run the package named by
``CODEX_BENCH_PACKAGE_SOURCE`` (their ``PYTHONPATH``): the same measuring code, the same
interpreter and the same machine minute for both, so a drift of the machine's speed falls on
both. For every number the figures record (``values``), the table shows the median over the
rounds for each package and their ratio (this tree / REV): under 1 is faster (or smaller).
Compare the figures' ``ratio`` rows first: each is already against a raw baseline taken in the
same run. Exit status: 0, or 1 when a run of the bench failed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import PACKAGE_SOURCE_ENV

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/compare.py", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("rev", help="the commit to compare with (anything `git archive` takes)")
    parser.add_argument(
        "--only", default="cold,stages,capture", help="figure groups (as bench/run.py --only)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="bench runs for each package")
    parser.add_argument("--quick", action="store_true", help="pass --quick to bench/run.py")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def unpack(rev: str, into: Path) -> Path:
    """REV's ``src`` tree under ``into``; its path."""
    archive = into / "src.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def bench_once(source: Path, args: argparse.Namespace, out: Path) -> dict[str, dict[str, float]]:
    """One ``bench/run.py`` with the package at ``source``; figure key -> numeric values."""
    env = {**os.environ, PACKAGE_SOURCE_ENV: str(source)}
    argv = [sys.executable, str(HERE / "run.py"), "--only", args.only, "--json", str(out)]
    subprocess.run([*argv, *(["--quick"] if args.quick else [])], env=env, check=True)
    figures: list[dict[str, Any]] = json.loads(out.read_text())["figures"]
    return {
        figure["key"]: {
            name: float(value)
            for name, value in figure["values"].items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        for figure in figures
    }


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    samples: dict[str, list[dict[str, dict[str, float]]]] = {"this": [], "rev": []}
    with tempfile.TemporaryDirectory(prefix="codex-bench-compare-") as temp:
        sources = {"this": ROOT / "src", "rev": unpack(args.rev, Path(temp))}
        try:
            for round_number in range(args.rounds):
                for side, source in sources.items():
                    print(f"[compare] round {round_number + 1}: {side}", file=sys.stderr)
                    out = Path(temp) / f"{side}-{round_number}.json"
                    samples[side].append(bench_once(source, args, out))
        except subprocess.CalledProcessError as error:
            print(f"a bench run failed ({error}); see its output above", file=sys.stderr)
            return 1
    print(f"this checkout against {args.rev}: medians of {args.rounds} alternating bench runs")
    print(f"{'figure value':<58} {'this':>12} {args.rev[:12]:>12} {'this/rev':>9}")
    for key in samples["this"][0]:
        for name in samples["this"][0][key]:
            this = [run[key][name] for run in samples["this"] if name in run.get(key, {})]
            rev = [run[key][name] for run in samples["rev"] if name in run.get(key, {})]
            if not this or not rev:
                continue
            mine, theirs = statistics.median(this), statistics.median(rev)
            ratio = f"{mine / theirs:.3f}" if theirs else "-"
            print(f"{key + '.' + name:<58} {mine:>12.4g} {theirs:>12.4g} {ratio:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
