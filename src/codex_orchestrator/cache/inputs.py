"""Which files are a stage's inputs: the files its globs match, or the files git lists.

`list_inputs` returns sorted relative POSIX paths with their ``lstat``, read through a
`DirChain` so that no link is followed: a link that matches is an input as a link (its target
text is fingerprinted, never what it points to), and a directory reached through a link is
never entered. FIFOs, devices and sockets are listed (as special files) but never opened.
``.git`` and the directories in ``exclude`` (the tool's own records) are never inputs.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from codex_orchestrator.cache.errors import InputsUnavailable
from codex_orchestrator.cache.gitfiles import GIT_TIMEOUT_SECONDS, GitLsFiles
from codex_orchestrator.cache.globs import Glob, compile_glob
from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.cache.tree import DirChain

_NEVER = ".git"

Listing = list[tuple[str, os.stat_result]]


#: Errors that mean "no such file here" (a missing name, a link or a file on the way).
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


def list_inputs(
    root: Path,
    spec: CacheSpec,
    chain: DirChain,
    *,
    exclude: Sequence[str] = (),
    git_timeout: float = GIT_TIMEOUT_SECONDS,
    expected: Sequence[str] = (),
) -> Listing:
    """The inputs of ``spec`` under ``root``, sorted by path, each with its ``lstat``.

    ``expected``: the sorted paths of the last listing; with ``"git"`` they are ``lstat``ed
    while git runs, and only the paths git adds to them are ``lstat``ed afterwards.
    """
    if not spec.uses_git:
        return match_globs(chain, [compile_glob(text) for text in spec.inputs], exclude)
    with GitLsFiles(root) as git:
        early = stat_paths(chain, expected)
        paths = git.paths(git_timeout)
    if exclude:
        inside = tuple(f"{directory}/" for directory in exclude)
        paths = [path for path in paths if not path.startswith(inside) and path not in exclude]
    if [path for path, _ in early] == paths:
        return early
    known = dict(early)
    late = dict(stat_paths(chain, [path for path in paths if path not in known]))
    return [
        (path, known[path] if path in known else late[path])
        for path in paths
        if path in known or path in late
    ]


def match_globs(chain: DirChain, globs: Sequence[Glob], exclude: Sequence[str] = ()) -> Listing:
    """Every file, link or special file named by ``globs``, or below a directory they name."""
    found: dict[str, os.stat_result] = {}
    for base in _walk_roots(globs):
        if not any(_inside(base, directory) for directory in exclude):
            _walk(chain, base, globs, frozenset(exclude), found)
    return sorted(found.items())


def stat_paths(chain: DirChain, paths: Iterable[str]) -> Listing:
    """``lstat`` of sorted relative ``paths``; a path that is absent, or below a link or a
    non-directory, is left out (as git itself sees a tracked file beyond a link: deleted)."""
    listing: Listing = []
    append, lstat = listing.append, os.lstat
    current, fd = None, -1
    for path in paths:
        directory, _, name = path.rpartition("/")
        if directory != current:
            current = directory
            try:
                fd = chain.open(directory)
            except OSError as error:
                fd = _absent(error, directory)
        if fd < 0:
            continue
        try:
            append((path, lstat(name, dir_fd=fd)))
        except OSError as error:
            _absent(error, path)
    return listing


def _walk_roots(globs: Sequence[Glob]) -> list[str]:
    """The fewest directories whose walks cover every glob's base."""
    roots: list[str] = []
    for base in sorted({glob.base for glob in globs}):
        if not any(_inside(base, root) for root in roots):
            roots.append(base)
    return roots


def _walk(
    chain: DirChain,
    base: str,
    globs: Sequence[Glob],
    exclude: frozenset[str],
    found: dict[str, os.stat_result],
) -> None:
    """Collect matches in ``base`` and below, depth first, so that `DirChain` opens each
    directory once; ``everything`` marks a directory a glob named (all below it matches)."""
    pending = [(base, False)]
    while pending:
        directory, everything = pending.pop()
        prefix = f"{directory}/" if directory else ""
        listed: list[tuple[str, os.stat_result]] = []
        try:
            with os.scandir(chain.open(directory)) as entries:
                for entry in entries:
                    try:
                        listed.append((entry.name, entry.stat(follow_symlinks=False)))
                    except OSError as error:
                        _absent(error, prefix + entry.name)  # gone since it was listed
        except OSError as error:
            _absent(error, directory)  # a link or a vanished directory: nothing below it
            continue
        below: list[tuple[str, bool]] = []
        for name, info in listed:
            path = prefix + name
            if name == _NEVER or path in exclude:
                continue
            named = everything or any(glob.matches(path) for glob in globs)
            if stat.S_ISDIR(info.st_mode):
                if named or any(glob.may_match_below(path) for glob in globs):
                    below.append((path, named))
            elif named:
                found[path] = info
        pending.extend(sorted(below, reverse=True))


def _absent(error: OSError, path: str) -> int:
    """-1 when ``error`` says ``path`` is not there (or is a link); raise otherwise, since
    what cannot be read cannot be part of the key."""
    if error.errno in _ABSENT:
        return -1
    raise InputsUnavailable(f"{path or '.'}: {error.strerror or error}") from None


def _inside(path: str, directory: str) -> bool:
    return not directory or path == directory or path.startswith(directory + "/")
