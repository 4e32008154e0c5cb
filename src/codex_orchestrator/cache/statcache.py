"""The stat cache: the digest of every input as of its last ``lstat``, per worktree.

Content is re-read only when an input's `STAT_FIELDS` (type and mode, size, mtime, inode,
ctime, device) differ from what they were when it was last hashed, or when it was racy then
(changed too recently to trust its timestamps). Inode numbers differ between worktrees, so
each root has its own files: ``<cache dir>/stat/<sha256 of root and input spec>.bin``, one per
distinct input spec. In a git work tree a record also holds what git can vouch for
(`gitstat.GitRecord`). A damaged file is ignored with one warning (the inputs are hashed
again); failing to write one only costs time, so it is silent.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path

from codex_orchestrator.cache.digests import ENTRY_SIZE, STAT_SIZE, paths_blob
from codex_orchestrator.cache.gitstat import GitRecord
from codex_orchestrator.cache.packfile import read_packfile, write_packfile
from codex_orchestrator.util.safefs import real_directory

STAT_FORMAT = 1
STAT_DIR = "stat"


class StatRecord:
    """Inputs as last hashed: NUL-joined paths, packed stats, entries, indexes of racy ones,
    and (in a git work tree) what git can vouch for."""

    def __init__(
        self,
        paths_blob: bytes,
        stats: bytes,
        entries: bytes,
        racy: frozenset[int] = frozenset(),
        git: GitRecord | None = None,
    ) -> None:
        self.paths_blob = paths_blob
        self.stats = stats
        self.entries = entries
        self.racy = racy
        self.git = git

    @cached_property
    def paths(self) -> list[str]:
        """The sorted relative paths."""
        if not self.paths_blob:
            return []
        return self.paths_blob.decode("utf-8", "surrogateescape").split("\0")

    @cached_property
    def index(self) -> dict[str, int]:
        """Position of each path."""
        return {name: position for position, name in enumerate(self.paths)}

    def reusable(self, position: int, stats: bytes) -> bytes | None:
        """The entry at ``position`` when its stat equals ``stats`` and it was not racy."""
        if position in self.racy:
            return None
        if self.stats[position * STAT_SIZE : (position + 1) * STAT_SIZE] != stats:
            return None
        return self.entries[position * ENTRY_SIZE : (position + 1) * ENTRY_SIZE]


class StatCache:
    """The stat cache files of one root under one cache directory."""

    def __init__(
        self, cache_dir: Path, real_root: str, *, read_only: bool, warn: Callable[[str], None]
    ) -> None:
        self.directory = cache_dir / STAT_DIR
        self.real_root = real_root
        self.read_only = read_only
        self._warn = warn
        self._warned: set[Path] = set()

    def path(self, identity: str) -> Path:
        """The file of input spec ``identity`` under this root."""
        name = hashlib.sha256(f"{self.real_root}\0{identity}".encode()).hexdigest()[:32]
        return self.directory / f"{name}.bin"

    def load(self, identity: str) -> StatRecord | None:
        """The record of ``identity``; None when there is none or it is damaged."""
        path = self.path(identity)
        try:
            header, sections = read_packfile(path)
            return self._record(header, sections, identity)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            if isinstance(error, OSError) and not os.path.isdir(path.parent):
                return None  # none yet: the cache directory is missing or not a directory
            if path not in self._warned:
                self._warned.add(path)
                self._warn(
                    f"warning: stage cache: ignoring a damaged stat cache ({path}: {error}); "
                    "its inputs are hashed again"
                )
            return None

    def save(self, identity: str, record: StatRecord) -> None:
        """Replace the record of ``identity`` (best effort; never in read-only mode)."""
        if self.read_only:
            return
        header: dict[str, object] = {
            "format": STAT_FORMAT,
            "root": self.real_root,
            "identity": identity,
        }
        sections = {
            "paths": record.paths_blob,
            "stats": record.stats,
            "entries": record.entries,
            "racy": _positions(sorted(record.racy)),
        }
        if record.git is not None:
            header["git"] = {"index": record.git.index_path, "stat": record.git.index_stat}
            sections["untracked"] = _positions(record.git.untracked)
            sections["untrusted"] = _positions(record.git.untrusted)
            if record.git.dirs is not None:
                sections["dirs"] = paths_blob(record.git.dirs)
                sections["dir_stats"] = record.git.dir_stats
        with contextlib.suppress(OSError):
            real_directory(self.directory)
            write_packfile(self.path(identity), header, sections)

    def _record(
        self, header: dict[str, object], sections: dict[str, bytes], identity: str
    ) -> StatRecord:
        if header.get("format") != STAT_FORMAT:
            raise ValueError(f"format {json.dumps(header.get('format'))} is not {STAT_FORMAT}")
        if header.get("root") != self.real_root or header.get("identity") != identity:
            raise ValueError("it belongs to another root or input spec")
        paths, stats, entries = sections["paths"], sections["stats"], sections["entries"]
        count = paths.count(b"\0") + 1 if paths else 0
        if len(stats) != count * STAT_SIZE or len(entries) != count * ENTRY_SIZE:
            raise ValueError("its sections disagree on the number of inputs")
        racy = frozenset(_read_positions(sections["racy"], count))
        git = None
        recorded = header.get("git")
        if isinstance(recorded, dict) and "untracked" in sections and "untrusted" in sections:
            index_path, index_stat = recorded.get("index"), recorded.get("stat")
            if not isinstance(index_path, str) or not isinstance(index_stat, list):
                raise ValueError("its git record is malformed")
            dirs = None
            if "dirs" in sections:
                blob = sections["dirs"]
                dirs = tuple(blob.decode("utf-8", "surrogateescape").split("\0"))
                if len(sections["dir_stats"]) != len(dirs) * STAT_SIZE:
                    raise ValueError("its directory stats are malformed")
            git = GitRecord(
                index_path,
                tuple(int(value) for value in index_stat),
                tuple(_read_positions(sections["untracked"], count)),
                tuple(_read_positions(sections["untrusted"], count)),
                dirs,
                sections.get("dir_stats", b""),
            )
        return StatRecord(paths, stats, entries, racy, git)


def _positions(values: Iterable[int]) -> bytes:
    return array.array("q", values).tobytes()


def _read_positions(data: bytes, count: int) -> list[int]:
    """Positions stored by `_positions`; ``ValueError`` unless each is below ``count``."""
    positions = array.array("q")
    positions.frombytes(data)
    if any(not 0 <= position < count for position in positions):
        raise ValueError("a position is out of range")
    return positions.tolist()
