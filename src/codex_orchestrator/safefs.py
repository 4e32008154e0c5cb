"""Reading user files without hanging, without following links out, without unbounded memory.

Hostile repositories are normal input: a FIFO in place of a config blocks a plain ``open``
forever, ``/dev/zero`` behind a link exhausts memory. Every file the tool reads from a
repository goes through `read_regular`, which opens with ``O_NONBLOCK`` (so a FIFO cannot
block the open), refuses anything that is not a regular file, and reads at most ``limit``
bytes. The caps, and the links policy of `open_no_follow` and `resolve_within`, are
documented in ``docs/persistence.md``.
"""

from __future__ import annotations

import errno
import os
import stat
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

    ``FileNotFoundError`` propagates unchanged so that callers can treat absence as they like;
    every other refusal is an `UnreadableFileError` naming the reason.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_links:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnreadableFileError(path, error.strerror or str(error)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFileError(path, f"not a regular file ({file_kind(info.st_mode)})")
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
    """What a file of ``st_mode`` ``mode`` is, for messages: "a FIFO", "a directory", ..."""
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


def open_no_follow(
    path: Path | str, flags: int, mode: int = 0o644, *, dir_fd: int | None = None
) -> int:
    """``os.open`` that refuses a symbolic link as the last component of ``path``.

    Every file the tool appends to or opens for writing in place (locks, ``metrics.json``,
    event logs) goes through here: a link planted in its place would otherwise redirect the
    write to any file the user can write. The refusal is an ``OSError`` (``ELOOP``) whose text
    says why. Atomic replacements need no such care: ``rename`` replaces a link, it never
    writes through it. With ``dir_fd``, ``path`` is relative to that open directory (the stage
    cache walks a tree one directory at a time this way, so no component can be a link).
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP and _is_link(path, dir_fd):
            raise OSError(
                errno.ELOOP, "is a symbolic link; the tool never writes through a link", str(path)
            ) from None
        raise


def _is_link(path: Path | str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def real_directory(path: Path) -> Path:
    """Create directory ``path`` if needed and return it; a link in its place is refused
    (``OSError`` ``ELOOP``) so that files written into it cannot land elsewhere."""
    path.mkdir(parents=True, exist_ok=True)
    if os.path.islink(path):
        raise OSError(
            errno.ELOOP, "is a symbolic link; the tool never writes through a link", str(path)
        )
    return path


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
