"""The files git lists under a root: ``git ls-files --cached --others --exclude-standard``.

`GitLsFiles` starts git in the background with its output going to memory files, so git never
waits on a full pipe while the caller does other work (the stat fast path ``lstat``s the
inputs it already knows meanwhile, on the other core). It ends with a deadline; git is killed
(by its own handle) when it runs over, or when the caller leaves early.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from codex_orchestrator.cache.errors import InputsUnavailable
from codex_orchestrator.cache.tree import Closing

GIT_TIMEOUT_SECONDS = 60.0
GIT_ARGS = ("ls-files", "-z", "--cached", "--others", "--exclude-standard")


class GitLsFiles(Closing):
    """One run of ``git ls-files`` in ``root``; use as a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._out = os.memfd_create("git-ls-files-out", os.MFD_CLOEXEC)
        self._err = os.memfd_create("git-ls-files-err", os.MFD_CLOEXEC)
        self._started = time.monotonic()
        try:
            self._process = subprocess.Popen(
                ["git", *GIT_ARGS],
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=self._err,
            )
        except OSError as error:
            self._close_files()
            why = (
                "git is not installed"
                if isinstance(error, FileNotFoundError)
                else (f"cannot run git ({error.strerror})")
            )
            raise InputsUnavailable(f'inputs "git": {why}') from None

    def paths(self, timeout: float = GIT_TIMEOUT_SECONDS) -> list[str]:
        """The sorted relative paths git listed, waiting at most ``timeout`` seconds since
        the start; `InputsUnavailable` when git fails or runs over."""
        remaining = timeout - (time.monotonic() - self._started)
        try:
            code = self._process.wait(timeout=max(remaining, 0.0))
        except subprocess.TimeoutExpired:
            self._stop()
            raise InputsUnavailable(
                f'inputs "git": git ls-files took more than {timeout:g} s'
            ) from None
        if code != 0:
            lines = _read_all(self._err).decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else f"exit {code}"
            if "not a git repository" in why:
                why = f"{self.root} is not in a git repository; list globs instead"
            raise InputsUnavailable(f'inputs "git": {why}')
        text = os.fsdecode(_read_all(self._out))
        if "/\0" in text:  # a nested repository is listed as "dir/"
            text = text.replace("/\0", "\0")
        # A conflicted file is listed once per stage. The tracked, then the untracked files
        # come sorted: dict keeps that order, and sort() merges two sorted runs in one pass.
        paths = list(dict.fromkeys(text.split("\0")))
        if paths and not paths[-1]:
            paths.pop()
        paths.sort()
        return paths

    def _stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()  # our own child, by its handle
        self._process.wait()

    def close(self) -> None:
        """Stop git if it still runs (by its own handle), and free its output."""
        self._stop()
        self._close_files()

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
