"""``codex-orchestrator completion SHELL``: print a completion script; ``--list KIND``: the
run, pipeline or task ids the scripts offer (one a line, nothing on any error)."""

from __future__ import annotations

import argparse
import sys

from codex_orchestrator.completion import VALUE_KINDS, candidates, script
from codex_orchestrator.errors import EXIT_OK, UsageError
from codex_orchestrator.util.console import Reporter


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Print the script for ``args.shell``, or the values of kind ``args.list``."""
    if args.list is not None:
        if args.list not in VALUE_KINDS:
            raise UsageError(f"--list {args.list!r}: choose one of {', '.join(VALUE_KINDS)}")
        values = candidates(args.list, args.prefix)
        sys.stdout.write("".join(f"{value}\n" for value in values))
        return EXIT_OK
    if args.shell is None:
        raise UsageError("completion needs a shell: codex-orchestrator completion bash|zsh|fish")
    sys.stdout.write(script(args.shell, args.whole_parser()))
    return EXIT_OK
