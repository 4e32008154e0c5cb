"""Running the real CLI under a pseudo-terminal and reading what the terminal received."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

# SGR parameters that set a colour: 30-37/90-97 foreground, 40-47/100-107 background, 38/48
# extended (39/49 are "default colour" resets, which carry no colour).
_SGR = re.compile(rb"\x1b\[([0-9;]*)m")
_COLOUR_PARAMS = {
    str(n) for n in [*range(30, 39), *range(40, 49), *range(90, 98), *range(100, 108)]
}


def colour_codes(data: bytes) -> list[bytes]:
    """The SGR sequences in ``data`` that set a colour."""
    return [
        match.group()
        for match in _SGR.finditer(data)
        if _COLOUR_PARAMS & set(match.group(1).decode().split(";"))
    ]


def view_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    """``env`` as a person's terminal would have it: a real TERM, no CI, no NO_COLOR."""
    clean = {key: value for key, value in env.items() if key not in ("CI", "NO_COLOR", "TERM")}
    return {**clean, "TERM": "xterm-256color", **extra}


def run_in_pty(
    args: list[str], cwd: Path, env: dict[str, str], *, timeout: float = 60
) -> tuple[int, bytes, str]:
    """Run the CLI with stderr on a new pseudo-terminal; return (exit code, terminal bytes, stdout)."""
    session = start_in_pty(args, cwd, env)
    try:
        code, screen = session.finish(timeout)
        assert session.proc.stdout is not None
        return code, screen, session.proc.stdout.read().decode()
    finally:
        session.close()


class PtySession:
    """The CLI running with stderr on a pseudo-terminal, read as it goes."""

    def __init__(self, proc: subprocess.Popen[bytes], controller: int) -> None:
        self.proc = proc
        self.controller = controller
        self.seen = bytearray()

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.controller], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.controller, 65536)
        except OSError:
            return False
        self.seen += chunk
        return bool(chunk)

    def wait_for(self, needle: bytes, timeout: float = 30) -> None:
        """Read until ``needle`` appeared on the terminal."""
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            if time.monotonic() > deadline or not self._read(0.1):
                raise AssertionError(f"{needle!r} never appeared: {bytes(self.seen)!r}")

    def finish(self, timeout: float = 60) -> tuple[int, bytes]:
        """Read until the process ends; its exit code and everything the terminal got."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.1):
            pass
        return self.proc.wait(timeout=max(1.0, deadline - time.monotonic())), bytes(self.seen)

    def close(self) -> None:
        """End the process if it is still there (by its pid) and close the terminal."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        os.close(self.controller)


def start_in_pty(args: list[str], cwd: Path, env: dict[str, str]) -> PtySession:
    """Start the CLI with stderr on a new 100x30 pseudo-terminal."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "codex_orchestrator", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    return PtySession(proc, controller)


def plain(screen: bytes) -> str:
    """What the terminal received, without its escape sequences (the text a person reads)."""
    return re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", screen.decode("utf-8", "replace"))
