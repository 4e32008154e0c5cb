"""Run the orchestrator CLI in this process, then report this process's peak RSS.

Usage: ``python bench/_rss.py start --format json`` (any CLI arguments).

`resource.getrusage(RUSAGE_SELF)` counts the orchestrator (all its threads) and not the stage
processes it spawns, which is what the RSS bar is about. The peak goes to stderr as
``BENCH_MAXRSS_KB=<n>`` so that stdout stays the CLI's own.
"""

from __future__ import annotations

import resource
import sys

MARKER = "BENCH_MAXRSS_KB="


def run(argv: list[str]) -> int:
    """Run the CLI with ``argv``, print the peak RSS (KiB) to stderr, return the exit code."""
    from codex_orchestrator.cli import main

    try:
        code = main(argv)
    finally:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sys.stdout.flush()
        print(f"{MARKER}{peak}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
