"""Run the orchestrator CLI in this process, then report this process's peak RSS.

Usage: ``python bench/_rss.py start --format json`` (any CLI arguments).

The peak is the process's own high-water mark (``VmHWM`` in ``/proc/self/status``): the
orchestrator with all its threads, not the stage processes it spawns, which is what the RSS bar
is about. Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that over from the image the
process replaced at exec, so a measured process started by a large bench process (one that
ran a Dask cluster) reported the bench's own size. The peak goes to stderr as
``BENCH_MAXRSS_KB=<n>`` so that stdout stays the CLI's own.
"""

from __future__ import annotations

import resource
import sys

MARKER = "BENCH_MAXRSS_KB="


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB since it started (its exec)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):  # no procfs: the kernel's own count
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run(argv: list[str]) -> int:
    """Run the CLI with ``argv``, print the peak RSS (KiB) to stderr, return the exit code.

    Without arguments, only the peak of a bare interpreter (the baseline) is printed.
    """
    if not argv:
        print(f"{MARKER}{peak_rss_kib()}", file=sys.stderr, flush=True)
        return 0
    from codex_orchestrator.cli import main

    try:
        code = main(argv)
    finally:
        peak = peak_rss_kib()
        sys.stdout.flush()
        print(f"{MARKER}{peak}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
