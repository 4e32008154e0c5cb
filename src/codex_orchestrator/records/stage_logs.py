"""Where a run's stage files are and how to read them safely (``logs``, ``report``, MCP).

Log files follow the naming rule of ``docs/run-records.md``: ``commands/NN-<id>.stdout.log``
and ``.stderr.log`` for a stage's first attempt, ``NN-<id>.attempt-K.<stream>.log`` for later
ones; error files are ``errors/NN-<id>[.attempt-K].json``. `StageFiles` lists a run folder
once and indexes its names by stage, so finding every stage's files costs one listing and a
lookup a stage (a run of 3,000 stages is not scanned 3,000 times). Paths are derived from the
stage's index and id, never taken from the manifest, and opened without following links
(`safefs.open_no_follow`), so a tampered record cannot point a reader outside the run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.util.safefs import list_directory, open_no_follow

STREAMS = ("stdout", "stderr")
#: What follows ``NN-<id>`` in a log's name.
_LOG_SUFFIX = re.compile(r"(?:\.attempt-([1-9][0-9]{0,3}))?\.(stdout|stderr)\.log")
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


class StageFiles:
    """The names in one run folder (``commands`` or ``errors``), indexed by stage.

    A name ``NN-<id>.<rest>`` belongs to the stage of index NN (any zero padding) and id
    ``<id>`` (ids hold no dot); other names are ignored.
    """

    def __init__(self, folder: Path, names: Iterable[str]) -> None:
        self.folder = folder
        self._by_stage: dict[tuple[int, str], list[str]] = {}
        for name in sorted(names):
            number, _, rest = name.partition("-")
            stage_id = rest.split(".", 1)[0]
            if number.isascii() and number.isdigit() and stage_id:
                self._by_stage.setdefault((int(number), stage_id), []).append(name)

    @classmethod
    def listing(cls, folder: Path) -> StageFiles:
        """The index of ``folder``, listed once; empty when it cannot be listed (missing, or
        a link: never followed)."""
        try:
            names = list_directory(folder)
        except OSError:
            names = []
        return cls(folder, names)

    def of(self, index: object, stage_id: object) -> list[str]:
        """The names of stage ``index``/``stage_id``, sorted (none for a malformed entry)."""
        if not isinstance(index, int) or not isinstance(stage_id, str):
            return []
        return self._by_stage.get((index, stage_id), [])


def stage_sources(
    run_dir: Path,
    manifest: dict[str, Any],
    entry: dict[str, Any],
    streams: tuple[str, ...],
    files: StageFiles,
) -> list[LogSource]:
    """The log files of every attempt of stage ``entry`` in the ``commands`` index ``files``
    (attempts in order, then streams). Attempt numbers are read from the file names: a run
    killed between creating an attempt's logs and recording it leaves a gap in the recorded
    count."""
    stem = log_stem(entry["index"], entry["id"], len(manifest["commands"]))
    found = []
    for name in files.of(entry["index"], entry["id"]):
        match = _LOG_SUFFIX.fullmatch(name, len(stem)) if name.startswith(stem) else None
        if match and match.group(2) in streams:
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
    """A read descriptor on the log (None when absent); refuses links and non-regular files
    (`safefs.open_no_follow`)."""
    try:
        return open_no_follow(source.path, os.O_RDONLY)
    except OSError:
        return None


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


def fair_shares(sizes: list[int], limit: int) -> list[int]:
    """How much of each of ``sizes`` fits in ``limit`` in all: the small ones whole, what they
    leave shared evenly among the larger ones."""
    shares = [0] * len(sizes)
    remaining = limit
    order = sorted(range(len(sizes)), key=lambda index: sizes[index])
    for position, index in enumerate(order):
        shares[index] = min(sizes[index], remaining // (len(order) - position))
        remaining -= shares[index]
    return shares
