"""The stat fast path of ``"git"`` inputs, with git doing the ``lstat`` (docs/cache.md).

A no-change lookup must ``lstat`` every input; for 50,000 files Python spends more time making
``os.stat_result`` objects than the kernel spends on the calls. Git already does that work, in
C and on every core, and can say which tracked files changed. It compares each file with the
stat data its index holds, so its answer is about our digests only for a file whose ``lstat``,
when we hashed it, was exactly the index's stat data for it. Such inputs are *trusted*:

- when they were recorded, their stat was that of the index entry (to the nanosecond), the
  entry carried no flag that makes git skip or doubt it (assume-unchanged, skip-worktree,
  intent-to-add, a conflict stage), and their stat was not racy: mtime and ctime were more
  than the racy margin (2 s) old when they were hashed. Git may compare times to the second
  only: a later change then falls in a later second, and git sees it;
- while the index file stays the same file (same inode, size and times), ``git diff-files``
  names every tracked file whose stat differs from its entry, and compares the content of
  racily clean entries: a trusted input it does not name still has the content we hashed.
  Settings that would make git look less closely (``core.trustctime=false``,
  ``core.checkStat=minimal``, an fsmonitor) are overridden for that command.

Everything else (untracked files, untrusted tracked files, and the files git names) is
``lstat``ed by us as usual. Any doubt (the index changed, git failed, something differs) sends
the lookup down the ordinary path, which records the trusted inputs again.
"""

from __future__ import annotations

import bisect
import os
import re
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from codex_orchestrator.cache.digests import STAT_SIZE, pack_stats
from codex_orchestrator.cache.errors import InputsUnavailable
from codex_orchestrator.cache.gitfiles import (
    CHANGED,
    INDEX_PATH,
    INDEX_STAT,
    UNTRACKED,
    GitRun,
    limited,
)
from codex_orchestrator.cache.globs import compile_glob
from codex_orchestrator.cache.inputs import Listing, TreeReader, exclude_paths, walk_roots
from codex_orchestrator.cache.spec import CacheSpec

#: Index entry flags (git's ``ce_flags``) under which git skips or doubts an entry: a conflict
#: stage, assume-unchanged (``CE_VALID``), intent-to-add and skip-worktree.
_UNTRUSTED_FLAGS = 0x3000 | 0x8000 | (1 << 29) | (1 << 30)
_DEBUG_ENTRY = re.compile(
    r"([^\0]*)\0  ctime: (\d+):(\d+)\n  mtime: (\d+):(\d+)\n  dev: (\d+)\tino: (\d+)\n"
    r"  uid: \d+\tgid: \d+\n  size: (\d+)\tflags: ([0-9a-f]+)\n"
)
_U32 = 0xFFFFFFFF


class GitRecord(NamedTuple):
    """What the fast path needs from the last ordinary lookup of ``"git"`` inputs."""

    #: The index file and its stat (device, inode, size, mtime and ctime in ns) then.
    index_path: str
    index_stat: tuple[int, ...]
    #: Positions (in the recorded inputs) of untracked files, and of untrusted tracked ones.
    untracked: tuple[int, ...]
    untrusted: tuple[int, ...]
    #: Globs: every directory the walk listed, and their packed stats from just before, when
    #: none was racy. While none moved, the names the globs match are the same.
    dirs: tuple[str, ...] | None = None
    dir_stats: bytes = b""


def record_trust(
    root: Path,
    spec: CacheSpec,
    listing: Listing,
    racy: frozenset[int],
    walked: Listing,
    margin_ns: int,
    timeout: float,
) -> GitRecord | None:
    """Which inputs of ``listing`` (the sorted inputs of ``spec`` with the ``lstat`` their
    digests were taken at; ``racy``: positions not to trust) git can vouch for, and (globs)
    the directories ``walked`` to find them unless one changed within ``margin_ns``; None when
    the index could not be read whole. `InputsUnavailable` when ``root`` is not in a work
    tree."""
    index_path = _index_path(root, timeout)
    before = _stat(index_path)
    with GitRun(root, limited(INDEX_STAT, _pathspecs(spec))) as git:
        text = os.fsdecode(git.output(timeout))
    if before is None or _stat(index_path) != before:
        return None
    entries = _index_entries(text)
    if entries is None:
        return None
    untracked: list[int] = []
    untrusted: list[int] = []
    for position, (path, info) in enumerate(listing):
        entry = entries.get(path)
        if entry is None:
            untracked.append(position)
        elif position in racy or not _matches(entry, info):
            untrusted.append(position)
    dirs, dir_stats = _settled_directories(spec, walked, margin_ns)
    return GitRecord(index_path, before, tuple(untracked), tuple(untrusted), dirs, dir_stats)


def still_valid(
    record: GitRecord | None, spec: CacheSpec, walked: Listing, margin_ns: int
) -> GitRecord | None:
    """``record`` when inputs that did not move need no new one: its index is still the same
    file (with the directories a glob walk ``walked`` added, if it lacked them and they have
    settled); None when it must be made again (`record_trust`)."""
    if record is None or _stat(record.index_path) != record.index_stat:
        return None
    if record.dirs is None and not spec.uses_git:
        dirs, dir_stats = _settled_directories(spec, walked, margin_ns)
        if dirs is not None:
            return record._replace(dirs=dirs, dir_stats=dir_stats)
    return record


def _settled_directories(
    spec: CacheSpec, walked: Listing, margin_ns: int
) -> tuple[tuple[str, ...] | None, bytes]:
    """The directories a glob walk listed (every walk root among them) with their packed
    stats; (None, b"") when one is missing or changed too recently to trust its times."""
    if spec.uses_git:
        return None, b""
    listed = dict(walked)
    settled = time.time_ns() - margin_ns
    roots = walk_roots([compile_glob(text) for text in spec.inputs])
    if not all(root in listed for root in roots) or any(
        max(info.st_mtime_ns, info.st_ctime_ns) >= settled for info in listed.values()
    ):
        return None, b""
    dirs = tuple(sorted(listed))
    return dirs, pack_stats(listed[directory] for directory in dirs)


def unchanged(
    root: Path,
    tree: TreeReader,
    spec: CacheSpec,
    record: GitRecord,
    paths: Sequence[str],
    stats: bytes,
    exclude: Sequence[str],
    timeout: float,
) -> bool:
    """Whether the inputs of ``spec`` recorded as ``paths`` (sorted, with their packed
    ``stats``) are all still there, unchanged, and the only ones: True only when git and our
    own ``lstat`` of everything git cannot vouch for agree."""
    if _stat(record.index_path) != record.index_stat:
        return False
    try:
        with GitRun(root, limited(CHANGED, _pathspecs(spec))) as changed:
            if spec.uses_git:  # the tracked files are the index's; the others, git's to list
                with GitRun(root, UNTRACKED) as others:
                    current = exclude_paths(others.paths(timeout), exclude)
                listed = [paths[position] for position in record.untracked]
            else:  # the names our globs match now, found while git looks at the files
                listed = list(paths)
                if (
                    record.dirs is not None
                    and tree.directory_stats(record.dirs) == record.dir_stats
                ):
                    current = listed  # no directory moved: the same names
                else:
                    globs = [compile_glob(text) for text in spec.inputs]
                    current = tree.match_names(globs, exclude)
            named = exclude_paths(changed.paths(timeout), exclude)
    except InputsUnavailable:
        return False
    if _stat(record.index_path) != record.index_stat:
        return False  # git may have compared with another index
    if current != listed:
        return False
    if not spec.uses_git:  # the globs match the same names: others git names are no inputs
        named = [path for path in named if _position(paths, path) is not None]
    mine = {paths[position] for position in (*record.untracked, *record.untrusted)}
    check = sorted(mine.union(named))
    seen = dict(tree.stat_paths(check))
    for path in check:
        position = _position(paths, path)
        info = seen.get(path)
        if info is None or position is None:
            if info is not None or position is not None:
                return False  # appeared, or vanished
            continue  # a tracked file deleted then, still deleted now
        if pack_stats([info]) != stats[position * STAT_SIZE : (position + 1) * STAT_SIZE]:
            return False
    return True


def _position(paths: Sequence[str], path: str) -> int | None:
    """The position of ``path`` in sorted ``paths``; None when it is not there."""
    position = bisect.bisect_left(paths, path)
    return position if position < len(paths) and paths[position] == path else None


def _matches(entry: str, info: os.stat_result) -> bool:
    """Whether an index entry's stat data (`_index_entries`) is exactly ``info``, as far as
    the index holds it (seconds, device, inode and size in 32 bits)."""
    if not entry or not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        return False  # flagged, or a submodule or a special file: always looked at
    ctime, mtime = info.st_ctime_ns, info.st_mtime_ns
    return entry == (
        f"{ctime // 10**9 & _U32}:{ctime % 10**9}:{mtime // 10**9 & _U32}:{mtime % 10**9}:"
        f"{info.st_dev & _U32}:{info.st_ino & _U32}:{info.st_size & _U32}"
    )


def _index_entries(text: str) -> dict[str, str] | None:
    """Each path of ``git ls-files --debug -z`` with its stat data as one string, empty for an
    entry git skips or doubts (flags) or listed more than once (a conflict); None when the
    text does not parse (each entry holds the only NUL of its stretch: every NUL must start a
    matched entry's stat data)."""
    found = _DEBUG_ENTRY.findall(text)
    if len(found) != text.count("\0"):
        return None
    entries: dict[str, str] = {}
    for path, ctime_s, ctime_ns, mtime_s, mtime_ns, dev, ino, size, flags in found:
        usable = path not in entries and not int(flags, 16) & _UNTRUSTED_FLAGS
        entries[path] = f"{ctime_s}:{ctime_ns}:{mtime_s}:{mtime_ns}:{dev}:{ino}:{size}" * usable
    return entries


def _pathspecs(spec: CacheSpec) -> list[str]:
    """Where git needs to look for ``spec``: its globs' walk roots (none: everywhere)."""
    if spec.uses_git:
        return []
    roots = walk_roots([compile_glob(text) for text in spec.inputs])
    return [] if "" in roots else roots


def _index_path(root: Path, timeout: float) -> str:
    with GitRun(root, INDEX_PATH) as git:
        shown = os.fsdecode(git.output(timeout)).rstrip("\n")
    return os.path.join(root, shown)


def _stat(path: str) -> tuple[int, ...] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
