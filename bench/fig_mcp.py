"""MCP server (docs/mcp.md): time to the first tool result after the server starts, and the
latency of the `status` tool in a running server.

The server is driven with plain JSON-RPC lines over its stdin/stdout, as an agent's client does.
Baselines measured in the same run: an interpreter that only imports the SDK's server (the floor
of any server built on it) and the CLI's own ``status --format json``, which each `status` tool
call runs as a child process.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import IO, Any

from _harness import (
    PYTHON,
    BenchError,
    BenchRepo,
    Figure,
    Profile,
    bench_repo,
    cli_argv,
    fmt_seconds,
    median,
    progress,
    timed_run,
)

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def measure(profile: Profile) -> list[Figure]:
    """Time to first result (fresh server each round) and status latency (one server)."""
    rounds = 3 if profile.quick else 7
    calls = 10 if profile.quick else 30
    with bench_repo("mcp") as repo:
        repo.write_config([{"id": "quick", "stages": [{"id": "one", "command": "true"}]}], "quick")
        _, run = repo.start()
        run_id = str(run["run_id"])
        sdk = median(
            [
                timed_run([PYTHON, "-c", "import mcp.server.mcpserver"], env=repo.env)[0]
                for _ in range(rounds)
            ]
        )
        cli_status = median(
            [
                timed_run(
                    cli_argv("status", run_id, "--format", "json"), env=repo.env, cwd=repo.root
                )[0]
                for _ in range(rounds)
            ]
        )
        progress(f"mcp: first tool result x{rounds}")
        first = [_first_result(repo, run_id) for _ in range(rounds)]
        progress(f"mcp: status latency x{calls}")
        latencies = _status_latencies(repo, run_id, calls)
    first_value = median(first)
    status_value = median(latencies)
    return [
        Figure(
            "mcp.first_result",
            "mcp: server start to first tool result",
            fmt_seconds(first_value),
            f"import of the SDK server: {fmt_seconds(sdk)}",
            f"{first_value / sdk:.2f}x",
            "(figure)",
            None,
            {"seconds": first, "sdk_import_seconds": sdk},
            note=f"median of {rounds}; spawn, initialize, tools/call status; SDK import included",
        ),
        Figure(
            "mcp.status_latency",
            "mcp: status tool latency",
            fmt_seconds(status_value),
            f"CLI status --format json: {fmt_seconds(cli_status)}",
            f"{status_value / cli_status:.2f}x",
            "(figure)",
            None,
            {"seconds": latencies, "cli_status_seconds": cli_status},
            note=f"median of {calls} calls in one running server",
        ),
    ]


def _spawn(repo: BenchRepo) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cli_argv("mcp"),
        cwd=repo.root,
        env=repo.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def _send(server: subprocess.Popen[bytes], *messages: dict[str, Any]) -> None:
    assert server.stdin is not None
    server.stdin.write(b"".join(json.dumps(message).encode() + b"\n" for message in messages))
    server.stdin.flush()


def _answer(stdout: IO[bytes], request_id: int) -> dict[str, Any]:
    while True:
        line = stdout.readline()
        if not line:
            raise BenchError("the MCP server closed its stdout")
        message: dict[str, Any] = json.loads(line)
        if message.get("id") == request_id:
            if "error" in message or message["result"].get("isError"):
                raise BenchError(f"MCP call {request_id} failed: {line[:300]!r}")
            return message


def _status_call(request_id: int, run_id: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "status", "arguments": {"run": run_id}},
    }


def _first_result(repo: BenchRepo, run_id: str) -> float:
    began = time.monotonic()
    server = _spawn(repo)
    try:
        assert server.stdout is not None
        _send(server, INITIALIZE)
        _answer(server.stdout, 0)
        _send(server, INITIALIZED, _status_call(1, run_id))
        _answer(server.stdout, 1)
        return time.monotonic() - began
    finally:
        _stop(server)


def _status_latencies(repo: BenchRepo, run_id: str, calls: int) -> list[float]:
    server = _spawn(repo)
    try:
        assert server.stdout is not None
        _send(server, INITIALIZE)
        _answer(server.stdout, 0)
        _send(server, INITIALIZED)
        samples = []
        for request_id in range(1, calls + 1):
            began = time.monotonic()
            _send(server, _status_call(request_id, run_id))
            _answer(server.stdout, request_id)
            samples.append(time.monotonic() - began)
        return samples
    finally:
        _stop(server)


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Close stdin (the server's normal end); kill only if it does not exit."""
    assert server.stdin is not None
    server.stdin.close()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
