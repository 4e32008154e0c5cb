"""Reading user files without hanging, without following links out, without unbounded memory.

Hostile repositories are normal input: a FIFO in place of a config blocks a plain ``open``
forever, ``/dev/zero`` behind a link exhausts memory. Every file the tool reads from a
repository goes through `read_regular`, which opens with ``O_NONBLOCK`` (so a FIFO cannot
block the open), refuses anything that is not a regular file, and reads at most ``limit``
bytes. The caps are documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

CONFIG_SIZE_LIMIT = 8 * 1024 * 1024
DETECTION_SIZE_LIMIT = 4 * 1024 * 1024
TEXT_SIZE_LIMIT = 16 * 1024 * 1024


class UnreadableFileError(Exception):
    """A file that is not a regular file, is larger than its cap, or cannot be read."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


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
            raise UnreadableFileError(path, f"not a regular file ({_kind(info.st_mode)})")
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


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"
