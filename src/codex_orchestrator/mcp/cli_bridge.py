"""The MCP server's way of doing anything: run the real CLI as a child process, bounded.

Every tool of the MCP server (see docs/mcp.md) is one or more runs of
``python -m codex_orchestrator <command> ... --format json`` in the server's root. A child
process keeps the server's stdout protocol-only (nothing a command or a stage prints can reach
it), gives each tool the CLI's own validation and one-line errors, and lets runs started with
``--detach`` outlive the server. This module owns those children: it bounds what it reads from
them and how long they run, and ends the ones still running when the server stops, except a
command that is detaching a run (``start``/``resume --detach``): that one is never signalled,
even when its caller goes away mid-call, since the run it creates must outlive the server; it
is waited for (it returns at once), or left to finish by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.abc

from codex_orchestrator.errors import EXIT_USAGE

#: Largest JSON document read from a command (a `runs` listing, a status with many stages).
DOCUMENT_LIMIT = 8 * 1024 * 1024
#: What is kept of a command's stderr: enough for its last error line.
STDERR_TAIL = 16 * 1024
#: How long one command may run before it is ended (``tasks check`` over a big repository).
COMMAND_TIMEOUT_SECONDS = 300.0
#: Time a child gets between SIGTERM and SIGKILL when it must be ended.
END_GRACE_SECONDS = 2.0


class CliError(Exception):
    """A command that failed as bad input or could not answer: its one-line message and code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Captured(NamedTuple):
    """What a finished command left: its exit code, stdout (bounded) and the tail of stderr."""

    exit_code: int
    stdout: bytes
    stdout_bytes: int
    stdout_cut: bool
    stderr_tail: bytes


class CliRunner:
    """Runs CLI commands as children of the server and ends those still running at shutdown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._children: dict[int, anyio.abc.Process] = {}
        self._detaching: set[int] = set()

    @property
    def running(self) -> list[int]:
        """Pids of the children still running (tests, shutdown)."""
        return [pid for pid, child in self._children.items() if child.returncode is None]

    async def document(
        self,
        *arguments: str,
        accept: frozenset[int] = frozenset({0}),
        limit: int = DOCUMENT_LIMIT,
        detaching: bool = False,
    ) -> dict[str, Any]:
        """Run ``<arguments> --format json`` and return its JSON document (at most ``limit`` bytes).

        An exit code outside ``accept``, or a document carrying ``error``, raises `CliError`
        with the command's own message and exit code. ``detaching``: the command starts a run
        that must outlive the server (see `capture`).
        """
        # Options go before a "--" that ends them (tasks mark ... -- TASK ITEM).
        end = arguments.index("--") if "--" in arguments else len(arguments)
        command = [*arguments[:end], "--format", "json", *arguments[end:]]
        captured = await self.capture(command, limit, detaching=detaching)
        document = _parse_document(captured, limit)
        if "error" in document or captured.exit_code not in accept:
            message = document.get("error") or last_line(captured.stderr_tail)
            code = document.get("exit_code", captured.exit_code)
            raise CliError(str(message), code if isinstance(code, int) else captured.exit_code)
        return document

    async def capture(
        self, arguments: list[str], limit: int, *, detaching: bool = False
    ) -> Captured:
        """Run the CLI with ``arguments``; keep the first ``limit`` bytes of stdout.

        A ``detaching`` command is never signalled: cancelled (its caller went away, the server
        stops), it is waited for, shielded, as long as a command may take, then left alone.
        """
        command = [sys.executable, "-m", "codex_orchestrator", *arguments]
        # A session of its own: the child's group is ended as one at shutdown, and a Ctrl-C
        # aimed at the agent's terminal reaches the server, which decides what to end.
        child = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            start_new_session=True,
        )
        self._children[child.pid] = child
        if detaching:
            self._detaching.add(child.pid)
        stdout = _Bounded(limit, keep_head=True)
        stderr = _Bounded(STDERR_TAIL, keep_head=False)
        try:
            with anyio.move_on_after(COMMAND_TIMEOUT_SECONDS) as deadline:
                async with anyio.create_task_group() as group:
                    assert child.stdout is not None and child.stderr is not None
                    group.start_soon(stdout.drain, child.stdout)
                    group.start_soon(stderr.drain, child.stderr)
                await child.wait()
            if deadline.cancelled_caught:
                raise CliError(
                    f"'{' '.join(arguments[:2])}' did not answer within "
                    f"{COMMAND_TIMEOUT_SECONDS:g}s and was ended",
                    EXIT_USAGE,
                )
        finally:
            with anyio.CancelScope(shield=True):
                await (_let_finish(child) if detaching else _end(child))
                del self._children[child.pid]
                self._detaching.discard(child.pid)
        return Captured(
            exit_code=child.returncode if child.returncode is not None else EXIT_USAGE,
            stdout=stdout.data(),
            stdout_bytes=stdout.total,
            stdout_cut=stdout.cut,
            stderr_tail=stderr.data(),
        )

    async def end_all(self) -> None:
        """End every child still running (server shutdown); each was verified by being ours.
        A detaching one is let finish instead."""
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as group:
                for pid, child in list(self._children.items()):
                    group.start_soon(_let_finish if pid in self._detaching else _end, child)


class _Bounded:
    """Collects a stream, keeping at most ``limit`` bytes from its start or its end."""

    def __init__(self, limit: int, keep_head: bool) -> None:
        self.limit = limit
        self.keep_head = keep_head
        self.buffer = bytearray()
        self.total = 0

    @property
    def cut(self) -> bool:
        return self.total > len(self.buffer)

    async def drain(self, stream: anyio.abc.ByteReceiveStream) -> None:
        async for chunk in stream:
            self.total += len(chunk)
            if self.keep_head:
                room = self.limit - len(self.buffer)
                if room > 0:
                    self.buffer += chunk[:room]
            else:
                self.buffer += chunk
                if len(self.buffer) > self.limit:
                    del self.buffer[: len(self.buffer) - self.limit]

    def data(self) -> bytes:
        return bytes(self.buffer)


async def _end(child: anyio.abc.Process) -> None:
    """End a child's process group: SIGTERM, then SIGKILL after the grace period; reap it.

    The child is our own unreaped process, so its pid (and the group it leads) cannot have been
    reused by anyone else while we signal it.
    """
    if child.returncode is None:
        _signal_group(child.pid, signal.SIGTERM)
        with anyio.move_on_after(END_GRACE_SECONDS):
            await child.wait()
    if child.returncode is None:
        _signal_group(child.pid, signal.SIGKILL)
        await child.wait()
    await child.aclose()


async def _let_finish(child: anyio.abc.Process) -> None:
    """Wait for a detaching command to return by itself (it does at once), never signalling
    it: a signal could reach the run it is creating. One that hangs is left to its session."""
    with anyio.move_on_after(COMMAND_TIMEOUT_SECONDS):
        await child.wait()
    if child.returncode is not None:
        await child.aclose()


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _parse_document(captured: Captured, limit: int) -> dict[str, Any]:
    if captured.stdout_cut:
        raise CliError(
            f"the command's answer is over the {limit}-byte limit; narrow the request",
            EXIT_USAGE,
        )
    try:
        document = json.loads(captured.stdout)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        line = last_line(captured.stderr_tail)
        raise CliError(
            f"the command printed no JSON document (exit {captured.exit_code}): {line}",
            captured.exit_code or EXIT_USAGE,
        )
    return document


def last_line(data: bytes) -> str:
    """The last non-empty line of a command's stderr, without the CLI's ``error:`` prefix."""
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return line.strip().removeprefix("error: ")
    return "the command failed without a message"
