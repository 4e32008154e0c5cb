"""A stage's two log files, as every executor writes them, and the outcome read back from them.

The files are opened once for the whole stage (a link planted in their place is refused, never
truncated); the local executor hands their descriptors to the stage itself, the Dask executor
writes what the stage's supervisor streams back. Either way the outcome's tails (the last
`TAIL_BYTES` of each stream) and byte counts are read back from the still-open descriptors, so
the orchestrator holds none of the output in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from codex_orchestrator.executors.base import TAIL_BYTES, StageOutcome, StageRequest
from codex_orchestrator.util.safefs import open_no_follow


def open_log(path: os.PathLike[str]) -> int:
    """Open a stage log for writing; a link planted in its place is refused, never truncated."""
    return open_no_follow(Path(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC)


def read_tail(fd: int, limit: int = TAIL_BYTES) -> tuple[bytes, int]:
    """The last ``limit`` bytes written to ``fd`` and the total size."""
    size = os.fstat(fd).st_size
    length = min(size, limit)
    return os.pread(fd, length, size - length), size


def write_all(fd: int, data: memoryview) -> None:
    """Append all of ``data`` to the log file ``fd``."""
    while data:
        data = data[os.write(fd, data) :]


class LogFiles:
    """The stage's stdout and stderr log files, open while the ``with`` block runs."""

    def __init__(self, request: StageRequest) -> None:
        self.paths = (request.stdout_path, request.stderr_path)
        self.stdout = self.stderr = -1

    def __enter__(self) -> LogFiles:
        self.stdout = open_log(self.paths[0])
        try:
            self.stderr = open_log(self.paths[1])
        except BaseException:
            os.close(self.stdout)
            raise
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self.stdout)
        os.close(self.stderr)

    def outcome(
        self, exit_code: int | None, started_at: float, duration: float, **fields: Any
    ) -> StageOutcome:
        """The stage's outcome, with tails and sizes read back from the log files.

        ``fields``: ``host`` and any of the outcome's flags and lost-stage fields (the flags
        default to False).
        """
        stdout_tail, stdout_bytes = read_tail(self.stdout)
        stderr_tail, stderr_bytes = read_tail(self.stderr)
        flags = dict.fromkeys(("timed_out", "cancelled", "killed", "lost"), False)
        return StageOutcome(
            exit_code=exit_code,
            started_at=started_at,
            duration_seconds=duration,
            stdout_tail=stdout_tail,
            stderr_tail=stderr_tail,
            stdout_bytes=stdout_bytes,
            stderr_bytes=stderr_bytes,
            **{**flags, **fields},
        )
