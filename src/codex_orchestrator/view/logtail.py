"""Reading the end of a run's log files without trusting them.

Logs live in ``<run>/commands/``; the view and the report only ever read their tails, so a
300 MB log costs one ``pread``. Files are opened without following links and without blocking
(a FIFO planted in place of a log cannot hang a reader), and anything but a regular file is
refused with a reason.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.util.safefs import UnreadableFileError, open_no_follow


def run_folder(run_dir: Path, folder: str) -> Path | None:
    """``<run>/<folder>`` when it is a real directory; None when missing or a link (never followed)."""
    path = run_dir / folder
    try:
        return path if stat.S_ISDIR(path.lstat().st_mode) else None
    except OSError:
        return None


def run_file(run_dir: Path, folder: str, recorded: object) -> Path | None:
    """The file a manifest names (``log_path``, ``error_file``) inside ``<run>/<folder>/``.

    Only the recorded name's last component is used, and the folder must be a real directory,
    so a tampered manifest or a planted link cannot point a reader outside the run directory.
    None when nothing usable is recorded.
    """
    if not isinstance(recorded, str) or not recorded.strip():
        return None
    name = recorded.replace("\\", "/").rsplit("/", 1)[-1]
    base = run_folder(run_dir, folder)
    if name in ("", ".", "..") or base is None:
        return None
    return base / name


#: Error files are at most 10,240 bytes when the tool writes them; a bigger one was tampered.
ERROR_FILE_BYTES = 64 * 1024


def read_error_file(path: Path) -> Any:
    """The parsed JSON of a stage's error file. Raises FileNotFoundError when it is missing,
    `UnreadableFileError` or ValueError when it is not a regular file, is over
    `ERROR_FILE_BYTES` or does not parse."""
    data, size = read_tail(path, ERROR_FILE_BYTES)
    if size > ERROR_FILE_BYTES:
        raise ValueError(f"{size} bytes, over the {ERROR_FILE_BYTES}-byte limit")
    return json.loads(data)


def read_tail(path: Path, limit: int) -> tuple[bytes, int]:
    """The last ``limit`` bytes of regular file ``path`` and its size.

    ``FileNotFoundError`` propagates; links, FIFOs, devices and read errors raise
    `UnreadableFileError`.
    """
    try:
        fd = open_no_follow(path, os.O_RDONLY)
    except (FileNotFoundError, UnreadableFileError):
        raise
    except OSError as error:
        raise UnreadableFileError(path, error.strerror or str(error)) from None
    try:
        info = os.fstat(fd)
        length = min(info.st_size, limit)
        return os.pread(fd, length, info.st_size - length), info.st_size
    except OSError as error:
        raise UnreadableFileError(path, error.strerror or str(error)) from None
    finally:
        os.close(fd)


class LogTail(NamedTuple):
    """The last lines of a log: decoded (invalid UTF-8 replaced), not yet neutralised."""

    lines: list[str]
    size: int  # the file's size in bytes
    omitted: int  # bytes of the file before the first line shown


def tail_lines(path: Path, max_lines: int, max_bytes: int) -> LogTail:
    """At most the last ``max_lines`` lines and ``max_bytes`` bytes of log ``path``.

    A line cut by the byte bound is left out, unless it is the only one (one huge line shows
    its end). Errors are those of `read_tail`.
    """
    data, size = read_tail(path, max_bytes)
    start = 0
    if size > len(data):
        newline = data.find(b"\n")
        start = newline + 1 if 0 <= newline < len(data) - 1 else 0
    lines = data[start:].split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if len(lines) > max_lines:
        start += sum(len(line) + 1 for line in lines[:-max_lines])
        lines = lines[-max_lines:]
    decoded = [line.decode("utf-8", errors="replace") for line in lines]
    return LogTail(decoded, size, size - len(data) + start)
