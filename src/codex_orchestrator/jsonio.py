"""Atomic, crash-safe file writes and tolerant JSON reads.

Every JSON file is replaced atomically: the bytes go to a temp file with a name unique across
processes in the same directory, then ``os.replace`` swaps it in, so a reader never sees a torn
file. Terminal writes pass ``durable=True`` to fsync the file and its directory.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from codex_orchestrator.clock import compact_utc


def dumps(data: Any, *, pretty: bool = True) -> bytes:
    """Serialise ``data`` as UTF-8 JSON with a trailing newline.

    ``pretty`` indents for people; compact output uses the C encoder and is several times faster.
    """
    if pretty:
        text = json.dumps(data, indent=2, ensure_ascii=False)
    else:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk (best effort on filesystems that refuse it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: Path, payload: bytes, *, durable: bool = False, mode: int = 0o644
) -> None:
    """Replace ``path`` with ``payload`` atomically; fsync file and directory when ``durable``."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(temp)
        raise
    os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_json(path: Path, data: Any, *, durable: bool = False, pretty: bool = True) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically."""
    atomic_write_bytes(path, dumps(data, pretty=pretty), durable=durable)


def append_line(path: Path, line: str, *, durable: bool = False) -> None:
    """Append one line to ``path`` in a single ``write`` (O_APPEND), fsynced when ``durable``.

    When the file does not end with a newline (a torn or hand-edited last line), the new line
    starts on a line of its own, so it stays parseable.
    """
    payload = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            payload = b"\n" + payload
        os.write(fd, payload)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """Parse ``path`` as JSON; raises OSError or ValueError (json.JSONDecodeError)."""
    with open(path, "rb") as handle:
        return json.loads(handle.read())


def quarantine(path: Path) -> Path:
    """Move a corrupted file aside as ``<name>.corrupt-<time>`` and return the new path."""
    target = path.with_name(f"{path.name}.corrupt-{compact_utc()}-{os.urandom(2).hex()}")
    os.replace(path, target)
    return target


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
