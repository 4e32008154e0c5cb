"""Real filesystem faults for tests: read-only directories and full filesystems.

As root, each faulty command runs in a private mount namespace (``unshare -m``) holding a
read-only bind mount or a tiny tmpfs: the mounts vanish with the command, so nothing needs
tearing down and nothing leaks to other processes. Without root, a read-only directory is a
``chmod 0555`` (restored by the caller's ``finally``); a full filesystem needs root.

When several commands must share one small filesystem (start, then resume on the same disk),
``private_tmpfs`` keeps a tmpfs alive in a private mount namespace held by one ``cat`` process:
commands join it with ``nsenter -m`` and the test reads and writes it through
``/proc/<pid>/root``. Nothing is ever mounted in the global mount namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    return probe.returncode == 0


NAMESPACES = _namespaces_work()


def read_only(command: Sequence[str], directory: Path) -> list[str]:
    """``command`` run with ``directory`` mounted read-only (root only)."""
    quoted = _quote(directory)
    return _in_namespace(
        command, [f"mount --bind {quoted} {quoted}", f"mount -o remount,bind,ro {quoted}"]
    )


def full(
    command: Sequence[str], directory: Path, size_kib: int = 64, *, fill: bool = True
) -> list[str]:
    """``command`` run with a tmpfs of ``size_kib`` KiB on ``directory``, full unless not ``fill``."""
    quoted = _quote(directory)
    setup = [f"mount -t tmpfs -o size={size_kib}k tmpfs {quoted}"]
    if fill:
        setup.append(f"{{ dd if=/dev/zero of={quoted}/.filler bs=1024 2>/dev/null || true; }}")
    return _in_namespace(command, setup)


Wrap = Callable[[Sequence[str]], list[str]]


@contextmanager
def read_only_dir(directory: Path) -> Iterator[Wrap]:
    """Yield a wrapper that runs a command with ``directory`` read-only (mount or chmod)."""
    if NAMESPACES:
        yield lambda command: read_only(command, directory)
        return
    if os.geteuid() == 0:
        pytest.skip("as root, a read-only directory needs unshare -m (chmod does not bind root)")
    mode = directory.stat().st_mode
    directory.chmod(0o555)
    try:
        yield list
    finally:
        directory.chmod(mode)


class PrivateTmpfs:
    """A tmpfs on ``directory`` that only commands run through ``wrap`` see."""

    def __init__(self, pid: int, directory: Path) -> None:
        self.pid = pid
        self.directory = directory

    def wrap(self, command: Sequence[str], cwd: Path) -> list[str]:
        """``command`` run in the tmpfs's mount namespace, in ``cwd``."""
        return ["nsenter", "-t", str(self.pid), "-m", f"--wd={cwd}", *command]

    def view(self, path: Path) -> Path:
        """``path`` as this process reaches it inside the namespace (absolute ``path``)."""
        return Path(f"/proc/{self.pid}/root") / path.relative_to("/")


@contextmanager
def private_tmpfs(directory: Path, size_kib: int) -> Iterator[PrivateTmpfs]:
    """A ``size_kib`` KiB tmpfs on ``directory`` in a private mount namespace (root only).

    The namespace is held by a ``cat`` reading a pipe from this process: closing the pipe
    ends it (and so does this process dying), and with it the tmpfs.
    """
    require_root_namespaces()
    directory.mkdir(parents=True, exist_ok=True)
    mount = f"mount -t tmpfs -o size={size_kib}k tmpfs {_quote(directory)}"
    script = f"{mount} && echo ready && exec cat >/dev/null"
    keeper = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert keeper.stdin is not None and keeper.stdout is not None
    try:
        if keeper.stdout.readline().strip() != "ready":
            pytest.skip("cannot mount a tmpfs in a private mount namespace")
        yield PrivateTmpfs(keeper.pid, directory)
    finally:
        keeper.stdin.close()
        try:
            keeper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            keeper.kill()  # its recorded pid: unshare execs sh, which execs cat
            keeper.wait()
        keeper.stdout.close()


def require_root_namespaces() -> None:
    """Skip, saying why, when mounts cannot be made."""
    if not NAMESPACES:
        pytest.skip("needs root and unshare -m to mount a read-only or full filesystem")


def _in_namespace(command: Sequence[str], setup: list[str]) -> list[str]:
    script = " && ".join([*setup, 'exec "$@"'])
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *command]


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"
