"""Opening the tool's records without following a link, blocking on a FIFO or reading too much.

Hostile repositories are normal input: a FIFO in place of a config blocks a plain ``open``
forever, ``/dev/zero`` behind a link exhausts memory, a link in place of a run directory sends
writes, reads and deletions anywhere the user can reach. Two rules, each enforced here once:

- Records (everything under the runs and out roots, whose paths are real: `Workspace` resolves
  the roots) are reached from ``/`` one component at a time, each directory opened relative to
  its parent with ``O_NOFOLLOW`` (`open_directory`): a link at *any* component is refused
  (``ELOOP``), never followed, so swapping a directory for a link after a check gains nothing.
  Files are opened relative to that directory (`open_no_follow`), with ``O_NONBLOCK`` (a FIFO
  cannot block the open) and refused unless regular. Reads (`read_regular` with
  ``follow_links=False``), listings (`list_directory`), renames, deletions (`remove_file`,
  `remove_tree`) and atomic replacements (``jsonio``) all go through the same walk.
- Repository files named by users (config, checklists, specs) may be links that stay inside the
  repository: `read_inside` resolves them within the root, then reads with `read_regular`.

Every read is capped at ``limit`` bytes. The caps and the links policy are documented in
``docs/persistence.md``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from codex_orchestrator.errors import OutsideRootError

CONFIG_SIZE_LIMIT = 8 * 1024 * 1024
DETECTION_SIZE_LIMIT = 4 * 1024 * 1024
TEXT_SIZE_LIMIT = 16 * 1024 * 1024
#: Records the tool wrote itself (manifests, state.json, pending snapshots, error files).
RECORD_SIZE_LIMIT = 64 * 1024 * 1024
ERROR_FILE_READ_LIMIT = 1024 * 1024
#: One-line files of a run (``.heartbeat``, ``.resume-token``).
SMALL_FILE_LIMIT = 4096


class UnreadableFileError(OSError):
    """A file that is not a regular file, is larger than its cap, or cannot be read.

    An ``OSError`` (``strerror`` is the reason), so code that handles a failed read handles it.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.strerror = reason


def read_regular(path: Path, limit: int, *, follow_links: bool = True) -> bytes:
    """The bytes of regular file ``path``, refusing FIFOs, devices, directories and big files.

    ``follow_links=False`` (every record of the tool) reads through `open_no_follow`: a link at
    any component of ``path`` is refused. ``FileNotFoundError`` propagates unchanged so that
    callers can treat absence as they like; every other refusal is an `UnreadableFileError`
    naming the reason.
    """
    try:
        if follow_links:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        else:
            fd = open_no_follow(path, os.O_RDONLY)
    except (FileNotFoundError, UnreadableFileError):
        raise
    except OSError as error:
        raise UnreadableFileError(path, error.strerror or str(error)) from None
    try:
        _check_regular(fd, path)
        info = os.fstat(fd)
        if info.st_size > limit:
            raise UnreadableFileError(
                path, f"{info.st_size} bytes is over the {limit}-byte limit for this file"
            )
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    except OSError as error:
        raise UnreadableFileError(path, error.strerror or str(error)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnreadableFileError(path, f"grew past the {limit}-byte limit while being read")
    return data


def file_kind(mode: int) -> str:
    """What a file of ``mode`` is, in words (``a FIFO``, ``a directory``, ...)."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a file"


_DIRECTORY_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LINK_REASON = "is a symbolic link; the tool never follows a link in a record's path"


def link_refused(path: Path | str) -> OSError:
    """The error for a link found where a record or its directory should be (``ELOOP``)."""
    return OSError(errno.ELOOP, _LINK_REASON, str(path))


def open_directory(path: Path, *, create: bool = False) -> int:
    """An ``O_PATH`` descriptor on directory ``path``, reached from ``/`` without following a
    link at any component (`link_refused` otherwise); ``create`` makes missing directories.

    Use it as ``dir_fd`` for the ``*at`` calls; close it after.
    """
    walked = "/"
    fd = os.open(walked, _DIRECTORY_FLAGS)
    try:
        for part in os.path.abspath(path).split(os.sep):
            if not part:
                continue
            walked = os.path.join(walked, part)
            try:
                child = _open_step(part, fd, create)
            except OSError as error:
                if error.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(part, fd):
                    raise link_refused(walked) from None
                raise OSError(error.errno, error.strerror, walked) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_step(name: str, parent: int, create: bool) -> int:
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):  # made by another process meanwhile
        os.mkdir(name, dir_fd=parent)
    return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)


def _is_link(name: str, parent: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode)
    except OSError:
        return False


def open_parent(path: Path) -> tuple[int, str]:
    """`open_directory` of ``path``'s directory, and ``path``'s last component."""
    absolute = os.path.abspath(path)
    return open_directory(Path(os.path.dirname(absolute))), os.path.basename(absolute)


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` of a record: no link followed at any component, never blocked by a FIFO.

    Every file the tool reads, appends to or opens for writing in place under its roots (locks,
    ``metrics.json``, event logs, stage logs, ``orchestrator.log``) goes through here: a link
    planted in its place or in place of a directory above it would otherwise redirect the
    access anywhere the user can reach. A link is refused with an ``OSError`` (``ELOOP``) whose
    text says why; anything but a regular file (a FIFO, a device) with `UnreadableFileError`.
    Atomic replacements (``jsonio``) walk the directory the same way; their ``rename``
    replaces a link at the name itself, never writes through it.
    """
    directory, name = open_parent(path)
    try:
        fd = os.open(
            name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=directory
        )
    except OSError as error:
        if error.errno == errno.ELOOP and _is_link(name, directory):
            raise link_refused(path) from None
        if error.errno == errno.ENXIO:  # opening a FIFO for writing, with no reader
            raise UnreadableFileError(path, "not a regular file (a FIFO)") from None
        raise OSError(error.errno, error.strerror, str(path)) from None
    finally:
        os.close(directory)
    try:
        _check_regular(fd, path)
        if not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_at(dir_fd: int, name: str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` of ``name`` in the open directory ``dir_fd``, refusing a link there
    (`link_refused`): for code that walks a tree one directory at a time (the stage cache), so
    that no component of what it reaches can be a link. ``name`` is one path component."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as error:
        # a link opened with O_DIRECTORY fails with ENOTDIR, not ELOOP: still a link
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, dir_fd):
            raise link_refused(name) from None
        raise


def _check_regular(fd: int, path: Path) -> None:
    """Refuse (`UnreadableFileError`) a descriptor that is not on a regular file."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        raise UnreadableFileError(path, f"not a regular file ({file_kind(mode)})")


def read_at(path: Path, offset: int, size: int) -> bytes:
    """At most ``size`` bytes of record ``path`` from ``offset`` (`open_no_follow`: no link
    followed, no FIFO waited on)."""
    fd = open_no_follow(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def _at_parent(path: Path, action: Callable[[str, int], None]) -> None:
    """``action(name, directory)`` on ``path``'s last component, in its directory reached
    without following a link; an error names ``path``."""
    directory, name = open_parent(path)
    try:
        action(name, directory)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None
    finally:
        os.close(directory)


def new_directory(path: Path) -> Path:
    """Create directory ``path``, which must not exist yet (``FileExistsError``), in a parent
    reached without following a link; return it."""
    _at_parent(path, lambda name, directory: os.mkdir(name, dir_fd=directory))
    return path


def real_directory(path: Path) -> Path:
    """Create directory ``path`` if needed and return it; a link at any component is refused
    (``OSError`` ``ELOOP``) so that files written into it cannot land elsewhere."""
    os.close(open_directory(path, create=True))
    return path


def scan_directory(path: Path) -> list[os.DirEntry[str]]:
    """The entries of directory ``path``, reached without following a link (see
    `open_directory`); ``FileNotFoundError`` when it does not exist. Ask an entry's type with
    ``follow_symlinks=False``."""
    directory = open_directory(path)
    try:
        readable = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=directory)
    finally:
        os.close(directory)
    try:
        with os.scandir(readable) as entries:
            return list(entries)
    finally:
        os.close(readable)


def list_directory(path: Path) -> list[str]:
    """The names in directory ``path`` (see `scan_directory`)."""
    return [entry.name for entry in scan_directory(path)]


def rename_no_follow(source: Path, target: Path) -> None:
    """``os.rename`` of a record (a link at ``source`` or ``target`` is renamed or replaced
    itself; a link in a directory above either is refused)."""
    source_dir, source_name = open_parent(source)
    try:
        target_dir, target_name = open_parent(target)
        try:
            os.rename(source_name, target_name, src_dir_fd=source_dir, dst_dir_fd=target_dir)
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(source)) from None
        finally:
            os.close(target_dir)
    finally:
        os.close(source_dir)


def remove_file(path: Path) -> None:
    """Delete file ``path`` (a link there is removed itself, its target untouched); a link in a
    directory above it is refused. ``FileNotFoundError`` when it is already gone."""
    _at_parent(path, lambda name, directory: os.unlink(name, dir_fd=directory))


def remove_tree(path: Path) -> None:
    """Delete directory ``path`` and everything in it, following no link: not above it (refused)
    and not inside it (``shutil.rmtree`` by descriptors removes links, never their targets)."""
    import shutil  # only when deleting: keeps start-up light

    def remove(name: str, directory: int) -> None:
        if _is_link(name, directory):
            raise link_refused(path)
        shutil.rmtree(name, dir_fd=directory)

    _at_parent(path, remove)


def resolve_within(path: Path, base: Path, shown: str, fix: str) -> Path:
    """The real path of ``path`` (links resolved), which must be ``base`` or lie inside it.

    Raises `OutsideRootError` (exit 2) naming ``shown``, where the link leads and ``fix``
    otherwise.
    """
    real, real_base = os.path.realpath(path), os.path.realpath(base)
    prefix = real_base.rstrip(os.sep) + os.sep
    if real != real_base and not real.startswith(prefix):
        raise OutsideRootError(
            f"{shown} resolves to {real}, outside {real_base}; the tool never follows a link "
            f"out of it; {fix}"
        )
    return Path(real)


def read_inside(root: Path, relative: str, limit: int) -> bytes:
    """`read_regular` of ``root/relative``, refusing (`OutsideRootError`) a link out of ``root``.

    For repository files named by users (checklists, the task index, specs, collateral).
    """
    fix = "replace the link with the file itself"
    return read_regular(resolve_within(root / relative, root, relative, fix), limit)
