"""Where a run's stage logs are and how to read them safely (``logs`` and the MCP server).

Log files follow the naming rule of ``docs/run-records.md``: ``commands/NN-<id>.stdout.log``
and ``.stderr.log`` for a stage's first attempt, ``NN-<id>.attempt-K.<stream>.log`` for later
ones. Paths are derived from the stage's index and id, never taken from the manifest, and
opened relative to the run's ``commands`` directory without following links, so a tampered
record cannot point a reader outside the run.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

STREAMS = ("stdout", "stderr")
_BLOCK = 1 << 16


class LogSource(NamedTuple):
    """One log file of one attempt of one stage."""

    run_id: str
    stage_index: int
    stage_id: str
    attempt: int
    stream: str
    commands_dir: Path
    name: str

    @property
    def path(self) -> Path:
        """The file's path."""
        return self.commands_dir / self.name

    @property
    def label(self) -> str:
        """How headers name this log."""
        attempt = f" attempt {self.attempt}" if self.attempt > 1 else ""
        return f"{self.run_id} [{self.stage_index}] {self.stage_id}{attempt} {self.stream}"


def log_stem(index: int, stage_id: str, stage_count: int) -> str:
    """``NN-<id>``, NN zero-padded to the width of the stage count (at least 2)."""
    return f"{index:0{max(2, len(str(stage_count)))}d}-{stage_id}"


def log_names(commands_dir: Path) -> list[str]:
    """The file names in a run's ``commands`` directory (empty when it cannot be listed)."""
    try:
        return os.listdir(commands_dir)
    except OSError:
        return []


def stage_sources(
    run_dir: Path,
    manifest: dict[str, Any],
    entry: dict[str, Any],
    streams: tuple[str, ...],
    names: list[str],
) -> list[LogSource]:
    """The log files of every attempt of stage ``entry`` found among ``names`` (attempts in
    order, then streams). Attempt numbers are read from the file names: a run killed between
    creating an attempt's logs and recording it leaves a gap in the recorded count."""
    stem = log_stem(entry["index"], entry["id"], len(manifest["commands"]))
    pattern = re.compile(
        re.escape(stem) + r"(?:\.attempt-([1-9][0-9]{0,3}))?\.(" + "|".join(streams) + r")\.log"
    )
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match:
            attempt = int(match.group(1) or 1)
            found.append((attempt, streams.index(match.group(2)), name))
    return [
        LogSource(
            str(manifest["run_id"]),
            entry["index"],
            entry["id"],
            attempt,
            streams[stream],
            run_dir / "commands",
            name,
        )
        for attempt, stream, name in sorted(found)
    ]


def open_log(source: LogSource) -> int | None:
    """A read descriptor on the log (None when absent); refuses links and non-regular files."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        directory = os.open(source.commands_dir, flags | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fd = os.open(source.name, flags, dir_fd=directory)
    except OSError:
        return None
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def read_from(fd: int, offset: int, limit: int | None = None) -> Iterator[bytes]:
    """The bytes of ``fd`` from ``offset`` to its current end (at most ``limit``), in blocks."""
    end = os.fstat(fd).st_size if limit is None else min(os.fstat(fd).st_size, offset + limit)
    while offset < end:
        chunk = os.pread(fd, min(1 << 20, end - offset), offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def tail_offset(fd: int, lines: int) -> int:
    """The offset where the last ``lines`` lines of ``fd`` begin (a final unterminated line
    counts as one)."""
    size = os.fstat(fd).st_size
    if lines <= 0:
        return size
    position = size
    wanted = lines + 1 if size and os.pread(fd, 1, size - 1) == b"\n" else lines
    while position > 0:
        start = max(0, position - _BLOCK)
        block = os.pread(fd, position - start, start)
        cut = len(block)
        while wanted:
            cut = block.rfind(b"\n", 0, cut)
            if cut < 0:
                break
            wanted -= 1
            if not wanted:
                return start + cut + 1
        position = start
    return 0
