"""Serve a hit: the original log bytes into the new run's logs, the outputs under the root.

Each stored file is checked against its sha256 while it is copied: a log that fails is
emptied, an output is written to a temporary name in its directory and renamed into place
only once it checked out, so a damaged entry never leaves a damaged output behind. Output
paths are opened one directory at a time without following links (`DirChain`); a path that
would lead through a link or outside the root is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from codex_orchestrator.cache.digests import Hasher
from codex_orchestrator.cache.entry import (
    STDERR_FILE,
    STDOUT_FILE,
    Entry,
    StoredFile,
    StoredOutput,
    is_relative_path,
)
from codex_orchestrator.cache.errors import CorruptEntryError, RestoreRefused
from codex_orchestrator.cache.tree import DirChain, split_path
from codex_orchestrator.util.safefs import open_at, open_no_follow

OpenStored = Callable[[str], int]


def restore_entry(
    entry: Entry,
    open_stored: OpenStored,
    root: Path,
    stdout: Path,
    stderr: Path,
    hasher: Hasher,
) -> tuple[str, ...]:
    """Restore ``entry`` (its files opened by ``open_stored``); the outputs' paths."""
    check_destinations(root, entry.outputs)
    for name, path in ((STDOUT_FILE, stdout), (STDERR_FILE, stderr)):
        target = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            _copy_checked(entry.file(name), open_stored, target, hasher)
        except CorruptEntryError:
            os.ftruncate(target, 0)
            raise
        finally:
            os.close(target)
    with DirChain(root) as chain:
        for output in entry.outputs:
            _restore_output(output, entry.file(output.file), open_stored, chain, hasher)
    return tuple(output.path for output in entry.outputs)


def check_destinations(root: Path, outputs: Sequence[StoredOutput]) -> None:
    """Refuse (`RestoreRefused`) any output that would be written outside ``root`` or
    through a link; directories that do not exist yet are fine (they will be created)."""
    with DirChain(root) as chain:
        for output in outputs:
            if not is_relative_path(output.path):
                _refuse(output.path, "it is not a path inside the root")
            directory, name = split_path(output.path)
            try:
                dir_fd = chain.open(directory)
            except OSError as error:
                if error.errno == errno.ENOENT:
                    continue
                _refuse_way(output.path, error)
            try:
                mode = os.lstat(name, dir_fd=dir_fd).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode):
                _refuse(output.path, "it is a symbolic link")
            if stat.S_ISDIR(mode):
                _refuse(output.path, "it is a directory")


def _restore_output(
    output: StoredOutput,
    stored: StoredFile,
    open_stored: OpenStored,
    chain: DirChain,
    hasher: Hasher,
) -> None:
    directory, name = split_path(output.path)
    try:
        dir_fd = chain.open(directory, create=True)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            _refuse_way(output.path, error)
        raise
    temporary = f".codex-cache-restore.{os.getpid()}.{os.urandom(4).hex()}"
    target = open_at(dir_fd, temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            _copy_checked(stored, open_stored, target, hasher)
            os.fchmod(target, output.mode)
        finally:
            os.close(target)
        # rename() replaces a link planted meanwhile; it never writes through one.
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        raise


def _copy_checked(stored: StoredFile, open_stored: OpenStored, target: int, hasher: Hasher) -> None:
    try:
        source = open_stored(stored.name)
    except OSError as error:
        raise CorruptEntryError(
            f"stage cache: {stored.name} of the entry cannot be read ({error.strerror})"
        ) from None
    try:
        digest, count = hasher.copy(source, target)
    finally:
        os.close(source)
    if count != stored.size or digest.hex() != stored.sha256:
        raise CorruptEntryError(
            f"stage cache: {stored.name} of the entry does not match its sha256"
        )


def _refuse(path: str, why: str) -> NoReturn:
    raise RestoreRefused(path, why)


def _refuse_way(path: str, error: OSError) -> NoReturn:
    """Refuse ``path``, whose directory could not be opened (`DirChain.open`'s ``error``: a
    component of it is a link, ``ELOOP``, or not a directory)."""
    kind = "a symbolic link" if error.errno == errno.ELOOP else "not a directory"
    _refuse(path, f"{error.filename!r} on its way is {kind}")
