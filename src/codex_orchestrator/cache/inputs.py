"""Which files are a stage's inputs: the files its globs match, or the files git lists.

A `TreeReader` lists inputs as sorted relative POSIX paths with their ``lstat``, read through a
`DirChain` so that no link is followed: a link that matches is an input as a link (its target
text is fingerprinted, never what it points to), and a directory reached through a link is
never entered. FIFOs, devices and sockets are listed (as special files) but never opened.
``.git`` and the directories in ``exclude`` (the tool's own records) are never inputs.

A reader that ``remember``s reads each directory, ``lstat`` and git listing once: a snapshot
of the tree, for callers that look up several stages while nothing they start writes to it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from codex_orchestrator.cache.digests import pack_stats
from codex_orchestrator.cache.errors import InputsUnavailable
from codex_orchestrator.cache.gitfiles import GIT_TIMEOUT_SECONDS, LS_FILES, GitRun
from codex_orchestrator.cache.globs import Glob, compile_glob
from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.cache.tree import Closing, DirChain

_NEVER = ".git"
#: Errors that mean "no such file here" (a missing name, a link or a file on the way).
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})

Listing = list[tuple[str, os.stat_result]]
#: A directory's entries: name, whether it is a directory (not through a link), its lstat
#: (None for directories: they are walked, never inputs themselves).
_Entries = list[tuple[str, bool, os.stat_result | None]]


class TreeReader(Closing):
    """Reads the tree below ``root``; ``chain`` opens its directories (for hashing too)."""

    def __init__(self, root: Path, *, remember: bool = False) -> None:
        self.root = root
        self.chain = DirChain(root)
        self._remember = remember
        self._entries: dict[str, _Entries | None] = {}
        self._names: dict[str, _Entries | None] = {}
        self._directory_stat: dict[str, os.stat_result] = {}
        self._stats: dict[str, os.stat_result | None] = {}
        self._git: list[str] | None = None

    def list_inputs(
        self,
        spec: CacheSpec,
        *,
        exclude: Sequence[str] = (),
        git_timeout: float = GIT_TIMEOUT_SECONDS,
        expected: Sequence[str] = (),
        walked: Listing | None = None,
    ) -> Listing:
        """The inputs of ``spec``, sorted by path, each with its ``lstat``.

        ``expected``: the sorted paths of the last listing; with ``"git"`` they are ``lstat``ed
        while git runs, and only the paths git adds to them are ``lstat``ed afterwards.
        ``walked`` (globs): receives the directories the walk listed, with their stat from
        just before they were read.
        """
        if not spec.uses_git:
            globs = [compile_glob(text) for text in spec.inputs]
            return self.match_globs(globs, exclude, walked)
        early: Listing = []
        paths = self._git
        if paths is None:
            with GitRun(self.root, LS_FILES) as git:
                early = self.stat_paths(expected)
                paths = git.paths(git_timeout)
            if self._remember:
                self._git = paths
        paths = exclude_paths(paths, exclude)
        if [path for path, _ in early] == paths:
            return early
        known = dict(early)
        late = dict(self.stat_paths([path for path in paths if path not in known]))
        return [
            (path, known[path] if path in known else late[path])
            for path in paths
            if path in known or path in late
        ]

    def match_globs(
        self, globs: Sequence[Glob], exclude: Sequence[str] = (), walked: Listing | None = None
    ) -> Listing:
        """Every file, link or special file named by ``globs``, or below a directory they
        name; ``walked`` receives the directories listed."""
        found = self._matches(globs, exclude, stats=True, walked=walked)
        return sorted((path, info) for path, info in found.items() if info is not None)

    def directory_stats(self, directories: Sequence[str]) -> bytes | None:
        """The packed stats of ``directories`` (opened without following links, as walks do);
        None when one is no longer a directory there."""
        infos = []
        for directory in directories:
            try:
                infos.append(os.fstat(self.chain.open(directory)))
            except OSError as error:
                _absent(error, directory)
                return None
        return pack_stats(infos)

    def match_names(self, globs: Sequence[Glob], exclude: Sequence[str] = ()) -> list[str]:
        """The sorted paths `match_globs` lists, without their ``lstat`` (which is most of its
        cost): one ``readdir`` a directory."""
        return sorted(self._matches(globs, exclude, stats=False))

    def _matches(
        self,
        globs: Sequence[Glob],
        exclude: Sequence[str],
        *,
        stats: bool,
        walked: Listing | None = None,
    ) -> dict[str, os.stat_result | None]:
        found: dict[str, os.stat_result | None] = {}
        excluded = frozenset(exclude)
        for base in walk_roots(globs):
            if not any(_inside(base, directory) for directory in exclude):
                self._walk(base, globs, excluded, found, stats, walked)
        return found

    def stat_paths(self, paths: Sequence[str]) -> Listing:
        """``lstat`` of sorted relative ``paths``; a path that is absent, or below a link or a
        non-directory, is left out (as git itself sees a tracked file beyond a link: deleted)."""
        listing: Listing = []
        append, lstat = listing.append, os.lstat
        remembered = self._stats if self._remember else None
        current, fd = None, -1
        for path in paths:
            if remembered is not None and path in remembered:
                info = remembered[path]
                if info is not None:
                    append((path, info))
                continue
            directory, _, name = path.rpartition("/")
            if directory != current:
                current = directory
                try:
                    fd = self.chain.open(directory)
                except OSError as error:
                    fd = _absent(error, directory)
            found = None
            if fd >= 0:
                try:
                    found = lstat(name, dir_fd=fd)
                    append((path, found))
                except OSError as error:
                    _absent(error, path)
            if remembered is not None:
                remembered[path] = found
        return listing

    def _walk(
        self,
        base: str,
        globs: Sequence[Glob],
        exclude: frozenset[str],
        found: dict[str, os.stat_result | None],
        stats: bool,
        walked: Listing | None,
    ) -> None:
        """Collect matches in ``base`` and below, depth first, so that `DirChain` opens each
        directory once; ``everything`` marks a directory a glob named (all below it matches)."""
        pending = [(base, False)]
        while pending:
            directory, everything = pending.pop()
            entries = self._directory(directory, stats)
            if entries is None:
                continue  # a link, a file or a vanished directory: nothing below it
            if walked is not None:
                walked.append((directory, self._directory_stat[directory]))
            prefix = f"{directory}/" if directory else ""
            for name, is_directory, info in entries:
                path = prefix + name
                if name == _NEVER or path in exclude:
                    continue
                named = everything or any(glob.matches(path) for glob in globs)
                if is_directory:
                    if named or any(glob.may_match_below(path) for glob in globs):
                        pending.append((path, named))
                elif named and (info is not None or not stats):
                    found[path] = info

    def _directory(self, directory: str, stats: bool = True) -> _Entries | None:
        """The entries of ``directory`` (with the ``lstat`` of files when ``stats``); None when
        it is not there (or is a link)."""
        if self._remember and directory in self._entries:
            return self._entries[directory]
        if self._remember and not stats and directory in self._names:
            return self._names[directory]
        prefix = f"{directory}/" if directory else ""
        found: _Entries = []
        entries: _Entries | None = found
        try:
            fd = self.chain.open(directory)
            # Taken before reading: a change made while it is read moves it.
            self._directory_stat[directory] = os.fstat(fd)
            with os.scandir(fd) as listed:
                for entry in listed:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            found.append((entry.name, True, None))
                        elif stats:
                            found.append((entry.name, False, entry.stat(follow_symlinks=False)))
                        else:
                            found.append((entry.name, False, None))
                    except OSError as error:
                        _absent(error, prefix + entry.name)  # gone since it was listed
        except OSError as error:
            _absent(error, directory)
            entries = None
        if self._remember:
            (self._entries if stats else self._names)[directory] = entries
        return entries

    def close(self) -> None:
        """Close the directories held open."""
        self.chain.close()


def exclude_paths(paths: list[str], exclude: Sequence[str]) -> list[str]:
    """``paths`` without those in or below the directories ``exclude``."""
    if not exclude:
        return paths
    inside = tuple(f"{directory}/" for directory in exclude)
    return [path for path in paths if not path.startswith(inside) and path not in exclude]


def walk_roots(globs: Sequence[Glob]) -> list[str]:
    """The fewest directories whose walks cover every glob's base."""
    roots: list[str] = []
    for base in sorted({glob.base for glob in globs}):
        if not any(_inside(base, root) for root in roots):
            roots.append(base)
    return roots


def _absent(error: OSError, path: str) -> int:
    """-1 when ``error`` says ``path`` is not there (or is a link); raise otherwise, since
    what cannot be read cannot be part of the key."""
    if error.errno in _ABSENT:
        return -1
    raise InputsUnavailable(f"{path or '.'}: {error.strerror or error}") from None


def _inside(path: str, directory: str) -> bool:
    return not directory or path == directory or path.startswith(directory + "/")
