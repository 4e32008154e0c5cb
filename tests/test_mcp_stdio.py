"""``codex-orchestrator mcp`` as a real child process: hostile input, stdout, read-only, shutdown."""

from __future__ import annotations

import json
import signal
import time
import uuid
from typing import Any

import anyio
import pytest

from codex_orchestrator.records.run_layout import REQUEST_NAME as CANCEL_REQUEST
from conftest import Repo
from helpers.mcp_client import (
    MARKER,
    assert_protocol_only,
    children_of,
    command_line,
    error,
    marked_processes,
    over_stdio,
    raw_server,
    result,
)
from helpers.processes import wait_for


@pytest.fixture
def noisy(repo: Repo) -> Repo:
    """A repository whose config makes the CLI warn and whose stage prints on both streams."""
    repo.write_config(
        {
            "defaultPipeline": "main",
            "runtimeMode": "ignored-with-a-warning",
            "pipelines": [
                {
                    "id": "main",
                    "stages": [
                        {"id": "noise", "command": "echo STAGE-STDOUT; echo STAGE-STDERR >&2"}
                    ],
                }
            ],
        }
    )
    return repo


def _call(server: Any, request_id: int, name: str, arguments: Any) -> dict[str, Any]:
    server.request(request_id, "tools/call", {"name": name, "arguments": arguments})
    return dict(server.response(request_id))


@pytest.mark.slow
def test_malformed_input_of_each_kind_leaves_the_server_answering(noisy: Repo) -> None:
    with raw_server(noisy) as server:
        server.send(b"this is not json", b"[1, 2, 3]", b"\xff\xfe\x00garbage", b"{}", b"")
        assert server.initialize()["result"]["serverInfo"]["name"] == "codex-orchestrator"
        server.request(1, "no/such/method")
        assert server.response(1)["error"]["code"] == -32601
        server.request(2, "tools/call", {"name": "plan", "arguments": "not an object"})
        assert "error" in server.response(2)
        server.request(3, "tools/call", {"arguments": {}})
        assert "error" in server.response(3)
        unknown = _call(server, 4, "format_disk", {})["result"]
        assert unknown["isError"] and unknown["structuredContent"]["exit_code"] == 2
        wrong = _call(server, 5, "wait", {"run": ["a"], "timeout_seconds": {"x": 1}})["result"]
        assert wrong["isError"] and "argument 'run'" in wrong["structuredContent"]["error"]
        huge = _call(server, 6, "plan", {"pipeline": "p" * 4_000_000})["result"]
        assert huge["isError"] and len(huge["structuredContent"]["error"]) < 400
        # nested past the SDK's parser: dropped without an answer, the server goes on
        server.request(
            7, "tools/call", {"name": "plan", "arguments": json.loads("[" * 500 + "]" * 500)}
        )
        fine = _call(server, 8, "plan", {})["result"]
        assert not fine["isError"] and fine["structuredContent"]["pipeline"]["id"] == "main"
        code, rest, stderr = server.close()
    assert code == 0
    assert_protocol_only(b"".join(server.lines) + rest)
    assert b"Traceback" not in stderr


@pytest.mark.slow
def test_stdout_carries_protocol_messages_only(noisy: Repo) -> None:
    code, run = noisy.start_json()
    assert code == 0
    with raw_server(noisy) as server:
        server.initialize()
        server.request(1, "tools/list")
        server.response(1)
        logs = _call(server, 2, "logs", {"run": run["run_id"]})["result"]["structuredContent"]
        assert {log["text"] for log in logs["logs"]} == {"STAGE-STDOUT\n", "STAGE-STDERR\n"}
        for request_id, (name, arguments) in enumerate(
            [
                ("plan", {}),
                ("status", {"run": run["run_id"]}),
                ("runs", {}),
                ("tasks_check", {}),
                ("plan", {"pipeline": "nope"}),
            ],
            start=3,
        ):
            _call(server, request_id, name, arguments)
        code, rest, _ = server.close()
    assert code == 0
    stdout = b"".join(server.lines) + rest
    assert_protocol_only(stdout)
    # stage output reaches the client only inside a JSON string, never as a line of its own
    assert b"\nSTAGE-STDOUT" not in stdout and not stdout.startswith(b"STAGE")


@pytest.mark.slow
def test_read_only_offers_seven_tools_and_refuses_start(noisy: Repo) -> None:
    async def main() -> tuple[set[str], dict[str, Any], dict[str, Any]]:
        async with over_stdio(noisy, "--read-only") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            refused = error(await client.call_tool("start", {}))
            planned = result(await client.call_tool("plan", {}))
            return names, refused, planned

    names, refused, planned = anyio.run(main)
    assert names == {"pipelines", "plan", "status", "wait", "runs", "logs", "tasks_check"}
    assert refused["exit_code"] == 2 and "unknown tool 'start'" in refused["error"]
    assert planned["pipeline"]["id"] == "main"
    assert not (noisy.root / ".runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["stdin-closed", "SIGTERM"])
def test_stopping_the_server_leaves_none_of_its_processes(repo: Repo, stop: str) -> None:
    repo.pipeline({"id": "slow", "command": "sleep 60"})
    marker = uuid.uuid4().hex
    env = {MARKER: marker}
    # a live run of the test's own: it is not the server's and must go on
    run_process = repo.spawn("start", "--format", "json", env=env)
    try:
        runs = repo.root / ".runs" / "default" / "cli"
        wait_for(lambda: runs.is_dir() and any(runs.iterdir()))
        run_id = next(runs.iterdir()).name
        with raw_server(repo, env=env) as server:
            server.initialize()
            # calls in flight when the server is told to stop: they must not outlive it
            for request_id in range(1, 6):
                server.request(
                    request_id,
                    "tools/call",
                    {"name": "wait", "arguments": {"run": run_id, "timeout_seconds": 600}},
                )
            seen: set[int] = set()

            def spawned() -> bool:
                seen.update(children_of(server.process.pid))
                return bool(seen)

            wait_for(spawned, timeout=30)
            began = time.monotonic()
            if stop == "SIGTERM":
                server.process.send_signal(signal.SIGTERM)
            code, rest, stderr = server.close(timeout=20)
            elapsed = time.monotonic() - began
        assert code == 0, stderr.decode()[-2000:]
        assert elapsed < 10
        assert_protocol_only(rest)
        assert all(
            "codex_orchestrator status" in command_line(pid) or not command_line(pid)
            for pid in seen
        )
        wait_for(lambda: not any(command_line(pid) for pid in seen), timeout=5)
        # of the processes that carry the marker, only the run's own are left
        left = {pid: command_line(pid) for pid in marked_processes(marker)}
        assert all(pid == run_process.pid or "sleep 60" in line for pid, line in left.items()), left
        assert run_process.poll() is None
    finally:
        run_process.send_signal(signal.SIGTERM)
        run_process.communicate(timeout=30)


@pytest.mark.slow
def test_stopping_the_server_ends_a_call_that_would_run_on(repo: Repo) -> None:
    # a stage that ignores SIGTERM: `cancel --wait` then waits out the whole grace period
    repo.pipeline(
        {"id": "stubborn", "command": "trap '' TERM; sleep 30"},
        settings={"kill_grace_seconds": 8},
    )
    with raw_server(repo) as server:
        server.initialize()
        started = _call(server, 1, "start", {})["result"]["structuredContent"]
        run_id = started["run_id"]
        wait_for(lambda: _stage_running(repo, run_id), timeout=30)
        server.request(2, "tools/call", {"name": "cancel", "arguments": {"run": run_id}})

        def cancel_calls() -> list[int]:
            return [
                pid
                for pid in children_of(server.process.pid)
                if "codex_orchestrator cancel" in command_line(pid)
            ]

        wait_for(lambda: bool(cancel_calls()), timeout=30)
        call = cancel_calls()[0]
        # the request is recorded and the run signalled: from here `cancel --wait` only waits
        run_dir = repo.root / started["artifact_root"]
        wait_for(lambda: (run_dir / CANCEL_REQUEST).exists(), timeout=30)
        time.sleep(0.5)
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code, _, stderr = server.close(timeout=20)
        assert code == 0, stderr.decode()[-2000:]
        # ended by the server, well before the grace period would have let it return
        wait_for(lambda: not command_line(call), timeout=5)
        assert time.monotonic() - began < 6
    # the detached run is not the server's: its own teardown still ends it, cancelled
    final = repo.cli(
        "status", run_id, "--watch", "--interval", "0.2", "--format", "json", timeout=60
    )
    assert json.loads(final.stdout)["status"] == "cancelled"


def _stage_running(repo: Repo, run_id: str) -> bool:
    status = json.loads(repo.cli("status", run_id, "--format", "json").stdout)
    return bool(status["commands"]) and status["commands"][0]["status"] == "running"
