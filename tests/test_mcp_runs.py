"""MCP tools that start and control real detached runs: start, wait, cancel, resume, runs."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import anyio
import pytest
from mcp import Client

from conftest import Repo
from helpers.mcp_client import (
    MARKER,
    command_line,
    error,
    in_process,
    marked_processes,
    over_stdio,
    result,
)
from helpers.processes import wait_for


@pytest.fixture
def served(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """A repo whose environment (with a marker) the in-process server's CLI children inherit."""
    for key, value in {**repo.env, MARKER: uuid.uuid4().hex}.items():
        monkeypatch.setenv(key, value)
    return repo


@pytest.mark.slow
def test_start_wait_status_logs_over_real_stdio(served: Repo) -> None:
    gate = served.root / "gate"
    served.pipeline(  # the run goes on until the test opens the gate, however loaded the host
        {
            "id": "build",
            "command": f"echo building; until [ -e '{gate}' ]; do sleep 0.02; done; echo built",
        },
        {"id": "check", "command": "echo checked >&2"},
    )
    updates: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        updates.append((done, total, message))

    async def main() -> list[dict[str, Any]]:
        async with over_stdio(served) as client:
            started = result(await client.call_tool("start", {"task": "agent-1"}))
            gate.touch()
            waited = result(
                await client.call_tool(
                    "wait",
                    {"run": started["run_id"], "timeout_seconds": 60},
                    progress_callback=progress,
                )
            )
            status = result(await client.call_tool("status", {"run": started["run_id"]}))
            logs = result(await client.call_tool("logs", {"run": started["run_id"]}))
            return [started, waited, status, logs]

    started, waited, status, logs = anyio.run(main)
    assert started["status"] in ("queued", "in_progress") and started["finished"] is False
    assert started["manifest"].endswith(f"{started['run_id']}/manifest.json")
    assert started["task_id"] == "agent-1"
    assert waited["finished"] is True and waited["status"] == "succeeded"
    assert updates and updates[-1][:2] == (2, 2)
    assert status["exit_code"] == 0 and [s["status"] for s in status["stages"]] == ["succeeded"] * 2
    texts = {(log["stage_id"], log["stream"]): log["text"] for log in logs["logs"]}
    assert texts[("build", "stdout")] == "building\nbuilt\n"
    assert texts[("check", "stderr")] == "checked\n"
    manifest = json.loads((served.root / started["manifest"]).read_text())
    assert manifest["status"] == "succeeded" and manifest["task_id"] == "agent-1"


def test_start_with_wait_seconds_returns_the_finished_run(served: Repo) -> None:
    served.pipeline({"id": "quick", "command": "echo quick"})
    updates: list[float] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        updates.append(done)

    async def scenario(client: Client) -> Any:
        return await client.call_tool("start", {"wait_seconds": 60}, progress_callback=progress)

    state = result(in_process(served, scenario))
    assert state["finished"] is True and state["status"] == "succeeded"
    assert state["exit_code"] == 0 and updates[-1] == 1


@pytest.mark.slow
def test_start_then_cancel_leaves_no_process(served: Repo) -> None:
    served.pipeline({"id": "slow", "command": "sleep 120 & sleep 120; wait"})

    async def scenario(client: Client) -> list[dict[str, Any]]:
        started = result(await client.call_tool("start", {}))
        with anyio.fail_after(30):
            while True:
                state = result(await client.call_tool("status", {"run": started["run_id"]}))
                if state["stages"] and state["stages"][0]["status"] == "running":
                    break
                await anyio.sleep(0.2)
        assert any("sleep 120" in line for line in _marked_lines())
        cancelled = result(
            await client.call_tool(
                "cancel", {"run": started["run_id"], "reason": "agent says stop"}
            )
        )
        again = result(await client.call_tool("cancel", {"run": started["run_id"]}))
        return [started, cancelled, again]

    started, cancelled, again = in_process(served, scenario)
    assert cancelled["status"] == "cancelled" and cancelled["status_detail"] == "cancelled"
    assert cancelled["finished"] is True and cancelled["action"] == "signalled"
    assert again["action"] == "already-ended"
    manifest = json.loads((served.root / started["manifest"]).read_text())
    assert manifest["cancel_events"][0]["reason"] == "agent says stop"
    assert manifest["cancel_events"][0]["actor"] == "mcp"
    wait_for(lambda: not _marked_lines(), timeout=10), _marked_lines()


def _marked_lines() -> list[str]:
    """Command lines of the processes started under this test's marker (the run's, the CLI's)."""
    return [command_line(pid) for pid in marked_processes(os.environ[MARKER]) if command_line(pid)]


@pytest.mark.slow
def test_resume_of_a_failed_run(served: Repo) -> None:
    served.pipeline(
        {"id": "first", "command": "echo once >> first.log"},
        {"id": "flaky", "command": "test -f fixed || { echo not fixed >&2; exit 3; }"},
    )

    async def fail(client: Client) -> dict[str, Any]:
        return result(await client.call_tool("start", {"wait_seconds": 60}))

    failed = in_process(served, fail)
    assert failed["status"] == "failed" and failed["exit_code"] == 1
    assert failed["status_detail"] == "stage:flaky:failed"
    (served.root / "fixed").write_text("")

    async def resume(client: Client) -> list[Any]:
        return [
            await client.call_tool("resume", {"run": failed["run_id"], "wait_seconds": 60}),
            await client.call_tool("resume", {"run": failed["run_id"]}),
            await client.call_tool("resume", {"run": "2020-01-01T00-00-00-000Z-00000000"}),
        ]

    resumed, again, unknown = in_process(served, resume)
    state = result(resumed)
    assert state["run_id"] == failed["run_id"] and state["status"] == "succeeded"
    assert [stage["status"] for stage in state["stages"]] == ["succeeded", "succeeded"]
    # the stage that had succeeded was not run again
    assert (served.root / "first.log").read_text() == "once\n"
    assert result(again)["status"] == "succeeded"
    assert error(unknown)["exit_code"] == 2 and "unknown run" in error(unknown)["error"]
    manifest = json.loads((served.root / state["manifest"]).read_text())
    assert manifest["resume_events"][-1]["actor"] == "mcp"


@pytest.mark.slow
def test_ten_concurrent_starts_are_all_recorded(served: Repo) -> None:
    served.pipeline({"id": "quick", "command": "echo $CODEX_ORCHESTRATOR_RUN_ID"})

    async def scenario(client: Client) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        started: list[dict[str, Any]] = []

        async def one() -> None:
            started.append(result(await client.call_tool("start", {"task": "crowd"})))

        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(one)
        for state in started:
            waited = result(
                await client.call_tool("wait", {"run": state["run_id"], "timeout_seconds": 120})
            )
            assert waited["status"] == "succeeded", waited
        listed = result(await client.call_tool("runs", {"task": "crowd", "limit": 50}))
        return started, listed

    started, listed = in_process(served, scenario)
    run_ids = {state["run_id"] for state in started}
    assert len(run_ids) == 10
    assert {row["run_id"] for row in listed["runs"]} == run_ids
    assert all(row["status"] == "succeeded" for row in listed["runs"])
    state = json.loads((served.root / "out" / "crowd" / "state.json").read_text())
    assert {entry["runId"] for entry in state["runs"]} == run_ids
    metrics = (served.root / ".runs" / "crowd" / "metrics.json").read_text().splitlines()
    assert {json.loads(line)["run_id"] for line in metrics} == run_ids


@pytest.mark.slow
def test_runs_filters_and_bad_values(served: Repo) -> None:
    served.pipeline({"id": "quick", "command": "true"})
    code, document = served.start_json("--task", "listed")
    assert code == 0

    async def scenario(client: Client) -> list[Any]:
        return [
            await client.call_tool("runs", {}),
            await client.call_tool("runs", {"status": "failed"}),
            await client.call_tool("runs", {"status": "exploded"}),
            await client.call_tool("runs", {"limit": 0}),
            await client.call_tool("runs", {"task": "../listed"}),
        ]

    listed, failed, bad_status, bad_limit, bad_task = in_process(served, scenario)
    assert [row["run_id"] for row in result(listed)["runs"]] == [document["run_id"]]
    assert result(failed)["runs"] == []
    for failure in (bad_status, bad_limit, bad_task):
        assert error(failure)["exit_code"] == 2
