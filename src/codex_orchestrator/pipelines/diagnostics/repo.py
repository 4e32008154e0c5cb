"""A read-only view of the repository root for detection: regular files only, size-capped.

Detection never executes anything: it reads a few files at the root through
`safefs.read_regular` (no FIFO can block it, no device can flood it, no link may lead outside
the root) and looks executables up on PATH.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from codex_orchestrator.util.safefs import DETECTION_SIZE_LIMIT, UnreadableFileError, read_regular


class RepoFiles:
    """Files at the root of one repository, each read at most once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._real_root = os.path.realpath(root)
        self._texts: dict[str, tuple[str | None, str | None]] = {}

    def read(self, name: str) -> tuple[str | None, str | None]:
        """``(text, None)``; ``(None, None)`` when absent; ``(None, problem)`` when unreadable."""
        if name not in self._texts:
            self._texts[name] = self._read(name)
        return self._texts[name]

    def text(self, name: str) -> str:
        """The file's text, or "" when it is absent or unreadable."""
        return self.read(name)[0] or ""

    def has_file(self, name: str) -> bool:
        """True when ``name`` is a file (a link to one counts: ``.venv/bin/python`` is one).

        Only `read` opens files, and it refuses links that lead out of the root.
        """
        return os.path.isfile(self.root / name)

    def has_dir(self, name: str) -> bool:
        """True when ``name`` is a directory."""
        return os.path.isdir(self.root / name)

    def first_file(self, *names: str) -> str | None:
        """The first of ``names`` that is a file at the root."""
        return next((name for name in names if self.has_file(name)), None)

    def _read(self, name: str) -> tuple[str | None, str | None]:
        path = self.root / name
        if not os.path.lexists(path):
            return None, None
        # realpath, not Path.resolve: a link loop must be refused below, not raise here.
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._real_root]) != self._real_root:
            return None, f"{name} leads outside the repository"
        try:
            data = read_regular(path, DETECTION_SIZE_LIMIT)
        except FileNotFoundError:
            return None, None
        except UnreadableFileError as error:
            return None, f"{name} is unreadable: {error.reason}"
        return data.decode("utf-8", errors="replace"), None


def parse_toml(text: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The TOML document, or None and a one-line problem naming ``name``."""
    import tomllib

    try:
        return tomllib.loads(text), None
    except (tomllib.TOMLDecodeError, RecursionError) as error:
        return None, f"{name} is not valid TOML ({error}); fix the file"
