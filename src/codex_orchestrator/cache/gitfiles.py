"""Git, run in the background for the stage cache: the files it lists, the ones it sees changed.

`GitRun` starts one git command with its output going to memory files, so git never waits on
a full pipe while the caller does other work meanwhile (the stat fast path ``lstat``s the inputs
it already knows while git lists the files, on the other core). It ends with a deadline; git is
killed (by its own handle) when it runs over, or when the caller leaves early.

Git finds the repository from the root: the variables that point it elsewhere (``GIT_DIR``,
``GIT_WORK_TREE``, ``GIT_INDEX_FILE``...) are dropped, so every lookup reads the same index.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from codex_orchestrator.cache.errors import InputsUnavailable
from codex_orchestrator.cache.tree import Closing

GIT_TIMEOUT_SECONDS = 60.0
#: Every input of ``"git"``: tracked files plus untracked ones that are not ignored.
LS_FILES = ("ls-files", "-z", "--cached", "--others", "--exclude-standard")
UNTRACKED = ("ls-files", "-z", "--others", "--exclude-standard")
#: The stat data the index holds for each tracked file (see `gitstat`).
INDEX_STAT = ("ls-files", "-z", "--cached", "--debug")
#: Tracked files whose stat differs from the index (or, for racily clean entries, whose content
#: does), with the user's settings that would make git look less closely turned off.
CHANGED = (
    *("-c", "core.trustctime=true", "-c", "core.checkStat=default", "-c", "core.fsmonitor=false"),
    *("diff-files", "--name-only", "-z", "--relative"),
)
INDEX_PATH = ("rev-parse", "--git-path", "index")
_ELSEWHERE = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")


def limited(args: Sequence[str], paths: Sequence[str]) -> tuple[str, ...]:
    """``args`` limited to ``paths`` (relative to the root, taken literally; none: all)."""
    if not paths:
        return tuple(args)
    return ("--literal-pathspecs", *args, "--", *paths)


def git_environment() -> dict[str, str]:
    """This process's environment for git: the repository is the root's, no optional locks."""
    env = {name: value for name, value in os.environ.items() if name not in _ELSEWHERE}
    env["GIT_OPTIONAL_LOCKS"] = "0"
    return env


class GitRun(Closing):
    """One git command run in ``root``; use as a context manager."""

    def __init__(self, root: Path, args: Sequence[str]) -> None:
        self.root = root
        self.name = next(arg for arg in args if not arg.startswith("-") and "=" not in arg)
        self._out = os.memfd_create("git-out", os.MFD_CLOEXEC)
        self._err = os.memfd_create("git-err", os.MFD_CLOEXEC)
        self._started = time.monotonic()
        try:
            self._process = subprocess.Popen(
                ["git", *args],
                cwd=root,
                env=git_environment(),
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=self._err,
            )
        except OSError as error:
            self._close_files()
            why = (
                "git is not installed"
                if isinstance(error, FileNotFoundError)
                else f"cannot run git ({error.strerror})"
            )
            raise InputsUnavailable(f'inputs "git": {why}') from None

    def output(self, timeout: float = GIT_TIMEOUT_SECONDS) -> bytes:
        """What git printed, waiting at most ``timeout`` seconds since the start;
        `InputsUnavailable` when git fails or runs over."""
        code = self._wait(max(timeout - (time.monotonic() - self._started), 0.0))
        if code is None:
            self._stop()
            raise InputsUnavailable(f'inputs "git": git {self.name} took more than {timeout:g} s')
        if code != 0:
            lines = _read_all(self._err).decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else f"exit {code}"
            if "not a git repository" in why:
                why = f"{self.root} is not in a git repository; list globs instead"
            raise InputsUnavailable(f'inputs "git": {why}')
        return _read_all(self._out)

    def paths(self, timeout: float = GIT_TIMEOUT_SECONDS) -> list[str]:
        """The sorted, distinct NUL-separated paths git printed (see `output`)."""
        text = os.fsdecode(self.output(timeout))
        if "/\0" in text:  # a nested repository is listed as "dir/"
            text = text.replace("/\0", "\0")
        # A conflicted file is listed once per stage. The tracked, then the untracked files
        # come sorted: dict keeps that order, and sort() merges two sorted runs in one pass.
        paths = list(dict.fromkeys(text.split("\0")))
        if paths and not paths[-1]:
            paths.pop()
        paths.sort()
        return paths

    def _wait(self, seconds: float) -> int | None:
        """Git's exit code, or None when it still runs after ``seconds``.

        ``Popen.wait`` with a timeout polls with sleeps of up to 50 ms; a pidfd wakes us the
        moment git exits (these waits are on the path of every lookup).
        """
        try:
            pidfd = os.pidfd_open(self._process.pid)
        except OSError:  # a kernel without pidfds
            try:
                return self._process.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                return None
        try:
            ready, _, _ = select.select([pidfd], [], [], seconds)
        finally:
            os.close(pidfd)
        return self._process.wait() if ready else None

    def close(self) -> None:
        """Stop git if it still runs (by its own handle), and free its output."""
        self._stop()
        self._close_files()

    def _stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()  # our own child, by its handle
        self._process.wait()

    def _close_files(self) -> None:
        for fd in (self._out, self._err):
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
