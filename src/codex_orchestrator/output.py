"""How commands talk to the user: one JSON document on stdout, or text; notes on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Reporter:
    """Prints a command's result as text or as exactly one JSON document."""

    def __init__(self, fmt: str = "text") -> None:
        self.json = fmt == "json"

    def result(self, document: dict[str, Any], text: str) -> None:
        """Print the command's result: ``document`` in JSON mode, else ``text``."""
        if self.json:
            sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def error(self, message: str, exit_code: int) -> None:
        """Report a failure as one line on stderr (and one JSON document in JSON mode)."""
        note(f"error: {message}")
        if self.json:
            self.result({"error": message, "exit_code": exit_code}, "")


def note(message: str) -> None:
    """Write a progress or warning line to stderr."""
    try:
        sys.stderr.write(message.rstrip("\n") + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def log_echo(*paths: Path) -> Callable[[], None]:
    """Return a callable that copies bytes newly appended to ``paths`` onto stderr, neutralised."""
    from codex_orchestrator.view.text import StreamNeutraliser

    offsets = dict.fromkeys(paths, 0)
    safe = {path: StreamNeutraliser() for path in paths}

    def echo() -> None:
        for path, offset in offsets.items():
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read(1 << 20)
            except OSError:
                continue
            if chunk:
                offsets[path] = offset + len(chunk)
                sys.stderr.buffer.write(safe[path].feed(chunk))
        sys.stderr.buffer.flush()

    return echo
