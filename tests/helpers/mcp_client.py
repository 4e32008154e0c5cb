"""Helpers for the MCP server tests: the SDK's own client, in-process and over real stdio."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

import helpers.processes as processes
from codex_orchestrator.mcp.server import build_server
from conftest import Repo

T = TypeVar("T")
MARKER = "CODEX_ORCHESTRATOR_TEST_MARKER"


def in_process(
    repo: Repo, scenario: Callable[[Client], Awaitable[T]], read_only: bool = False
) -> T:
    """Run ``scenario`` against an in-process server for ``repo`` (its children end with it)."""

    async def main() -> T:
        server, cli = build_server(repo.root, read_only)
        try:
            async with Client(server) as client:
                return await scenario(client)
        finally:
            await cli.end_all()
            assert cli.running == []

    return anyio.run(main)


@contextlib.asynccontextmanager
async def over_stdio(
    repo: Repo, *options: str, errlog: Path | None = None
) -> AsyncIterator[Client]:
    """The SDK client talking to ``codex-orchestrator mcp OPTIONS`` as a real child process."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "codex_orchestrator", "mcp", *options],
        env=repo.env,
        cwd=str(repo.root),
    )
    with open(errlog or repo.root.parent / "server.err", "a") as log:
        async with Client(stdio_client(params, errlog=log)) as client:
            yield client


def result(outcome: CallToolResult) -> dict[str, Any]:
    """The structured result of a successful tool call."""
    assert not outcome.is_error, outcome.content
    assert outcome.structured_content is not None
    return outcome.structured_content


def error(outcome: CallToolResult) -> dict[str, Any]:
    """The ``{"error", "exit_code"}`` of a failed tool call."""
    assert outcome.is_error, outcome.structured_content
    assert outcome.structured_content is not None
    assert set(outcome.structured_content) == {"error", "exit_code"}
    return outcome.structured_content


def cli_error(repo: Repo, *args: str) -> dict[str, Any]:
    """The error document the CLI itself prints for ``args``."""
    completed = repo.cli(*args, "--format", "json")
    document: dict[str, Any] = json.loads(completed.stdout)
    assert completed.returncode == document["exit_code"] != 0
    return document


class RawServer:
    """``codex-orchestrator mcp`` driven with hand-written JSON-RPC lines (hostile input)."""

    def __init__(self, repo: Repo, *options: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "codex_orchestrator", "mcp", *options],
            cwd=repo.root,
            env={**repo.env, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: list[bytes] = []
        self._queue: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(b"")

    def send(self, *lines: bytes) -> None:
        assert self.process.stdin is not None
        for line in lines:
            self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()

    def request(self, request_id: int, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(json.dumps(message).encode())

    def initialize(self) -> dict[str, Any]:
        self.request(
            0,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "1"},
            },
        )
        answer = self.response(0)
        self.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        return answer

    def response(self, request_id: int, timeout: float = 60) -> dict[str, Any]:
        """Read stdout lines until the response to ``request_id``; every line must be JSON-RPC."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            assert line, "the server closed stdout"
            self.lines.append(line)
            message = json.loads(line)
            assert message.get("jsonrpc") == "2.0", line
            if message.get("id") == request_id:
                return dict(message)
        raise AssertionError(f"no response to request {request_id}")

    def close(self, timeout: float = 15) -> tuple[int, bytes, bytes]:
        """Close stdin and wait for the server; its exit code, remaining stdout, and stderr."""
        assert self.process.stdin is not None and self.process.stderr is not None
        self.process.stdin.close()
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise
        self._reader.join(timeout=5)
        rest = b"".join(iter(self._queue.get_nowait, b"")) if not self._queue.empty() else b""
        return code, rest, self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def raw_server(repo: Repo, *options: str, env: dict[str, str] | None = None) -> Iterator[RawServer]:
    server = RawServer(repo, *options, env=env)
    try:
        yield server
    finally:
        server.kill()


def assert_protocol_only(stdout: bytes) -> None:
    """Every line the server printed on stdout is a JSON-RPC message."""
    for line in stdout.splitlines():
        message = json.loads(line)
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", line


def marked_processes(marker: str) -> list[int]:
    """Live processes (not zombies, not this one) whose environment carries ``MARKER=marker``."""
    return list(processes.marked_processes(f"{MARKER}={marker}"))


def children_of(parent: int) -> set[int]:
    """Live (not zombie) children of ``parent``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def session_of(pid: int) -> int | None:
    """The session id of ``pid``, or None when it is gone."""
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None
