"""The MCP server under hostile input and races, with the SDK's own client and real processes:
resources that only read, runs that outlive the server, prompt exit on a signal, bounded logs,
tampered manifests and odd numbers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from conftest import Repo
from helpers.mcp_client import error, in_process, raw_server, result
from helpers.processes import wait_for
from helpers.runctl import manifest_of

SECRET = "TOP-SECRET-OUTSIDE-THE-REPOSITORY"


@pytest.fixture
def served(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """A repo whose environment the in-process server's CLI children inherit."""
    for key, value in repo.env.items():
        monkeypatch.setenv(key, value)
    repo.pipeline({"id": "hello", "command": "echo hello"})
    return repo


def _run(repo: Repo, *args: str) -> tuple[str, Path]:
    code, document = repo.start_json(*args)
    assert code in (0, 1), document
    return str(document["run_id"]), repo.root / document["artifact_root"]


def _tree(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory`` with its size and modification time."""
    return {
        str(path.relative_to(directory)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
    }


@pytest.mark.slow
def test_mcp_resources_read_and_never_write(served: Repo, tmp_path: Path) -> None:
    """The report resource renders in memory (read-only server or not): no report.html, no
    file of the run changed; a manifest that is a link is refused, never followed."""
    run_id, run_dir = _run(served)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({**manifest_of(run_dir), "summary": SECRET}))
    linked_id, linked_dir = _run(served)
    (linked_dir / "manifest.json").unlink()
    (linked_dir / "manifest.json").symlink_to(outside)
    before = _tree(served.root / ".runs")

    async def scenario(client: Client) -> list[Any]:
        answers: list[Any] = []
        for uri in (f"run://{run_id}/report", f"run://{run_id}/manifest"):
            answers.append((await client.read_resource(uri)).contents[0].text)  # type: ignore[union-attr]
        for uri in (f"run://{linked_id}/manifest", f"run://{linked_id}/report"):
            try:
                answers.append((await client.read_resource(uri)).contents[0].text)  # type: ignore[union-attr]
            except Exception as failure:  # the SDK raises its MCPError
                answers.append(f"error: {failure}")
        return answers

    for read_only in (True, False):
        report, manifest, *linked = in_process(served, scenario, read_only=read_only)
        assert "<html" in report.lower() and run_id in report
        assert json.loads(manifest) == manifest_of(run_dir)
        assert all(answer.startswith("error: ") for answer in linked), linked
        assert not any(SECRET in answer for answer in linked)
    assert not (run_dir / "report.html").exists()
    assert _tree(served.root / ".runs") == before


def test_mcp_manifest_resource_serves_what_it_read_while_it_is_swapped(
    served: Repo, tmp_path: Path
) -> None:
    """A thread keeps swapping manifest.json for a link to a file outside the repository and
    back (each swap one atomic rename): no answer ever carries the outside file."""
    run_id, run_dir = _run(served)
    real = (run_dir / "manifest.json").read_bytes()
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({**json.loads(real), "summary": SECRET}))
    staged_link, staged_file = run_dir / ".swap-link", run_dir / ".swap-file"
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            staged_link.unlink(missing_ok=True)
            staged_link.symlink_to(outside)
            os.replace(staged_link, run_dir / "manifest.json")
            staged_file.write_bytes(real)
            os.replace(staged_file, run_dir / "manifest.json")

    async def scenario(client: Client) -> list[str]:
        answers = []
        for _ in range(40):
            try:
                read = await client.read_resource(f"run://{run_id}/manifest")
                answers.append(read.contents[0].text)  # type: ignore[union-attr]
            except Exception as failure:
                answers.append(f"error: {failure}")
        return answers

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        answers = in_process(served, scenario, read_only=True)
    finally:
        stop.set()
        swapper.join()
    assert not any(SECRET in answer for answer in answers)
    served_manifests = [answer for answer in answers if not answer.startswith("error: ")]
    assert all(json.loads(answer) == json.loads(real) for answer in served_manifests)


def _initialize_and_start(server: Any) -> None:
    server.initialize()
    server.request(1, "tools/call", {"name": "start", "arguments": {}})


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["stdin-closed", "SIGTERM"])
def test_mcp_a_run_started_through_the_server_outlives_it(repo: Repo, stop: str) -> None:
    """The client goes away (or the server is told to stop) while ``start`` is in flight,
    at moments swept across the call: every run it created ends as its pipeline does."""
    repo.pipeline({"id": "work", "command": "sleep 0.5; echo done"})
    for delay in (0.0, 0.1, 0.25, 0.45):
        with raw_server(repo) as server:
            _initialize_and_start(server)
            time.sleep(delay)
            if stop == "SIGTERM":
                server.process.send_signal(signal.SIGTERM)
            code, _, stderr = server.close(timeout=30)
            assert code == 0, stderr.decode()[-2000:]
    cli = repo.root / ".runs" / "default" / "cli"
    runs = sorted(path for path in cli.iterdir()) if cli.exists() else []
    assert runs, "no start got far enough to create a run"

    def all_ended() -> bool:
        return all(
            manifest_of(run)["status"] in ("succeeded", "failed", "cancelled") for run in runs
        )

    wait_for(all_ended, timeout=60)
    statuses = {run.name: manifest_of(run)["status"] for run in runs}
    assert set(statuses.values()) == {"succeeded"}, statuses


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_mcp_an_idle_server_exits_promptly_on_a_signal(repo: Repo, signum: int) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    with raw_server(repo) as server:
        server.initialize()
        time.sleep(0.3)  # idle: waiting for the next line of stdin, which never comes
        began = time.monotonic()
        server.process.send_signal(signum)
        try:
            code = server.process.wait(timeout=10)
        finally:
            elapsed = time.monotonic() - began
    assert code == 0 and elapsed < 5, (code, elapsed)


@pytest.mark.slow
def test_mcp_logs_are_capped_in_bytes_after_encoding(served: Repo) -> None:
    """13 MB of binary logs give the capped tail (never a document-size failure); a cut inside
    a multi-byte character never returns more than 64 KiB."""
    binary = "import sys; sys.{}.buffer.write(bytes(range(256)) * 26000)"
    served.pipeline(
        {"id": "binary", "command": f"python3 -c '{binary.format('stdout')}'"},
        {"id": "binerr", "command": f"python3 -c '{binary.format('stderr')}'"},
        {"id": "wide", "command": 'python3 -c \'print("x" + "é" * 90000)\''},
        {"id": "more", "command": f"python3 -c '{binary.format('stdout')}'"},
    )
    run_id, _ = _run(served)

    async def scenario(client: Client) -> list[Any]:
        return [
            await client.call_tool("logs", {"run": run_id}),
            await client.call_tool("logs", {"run": run_id, "stage": "wide"}),
            await client.call_tool("logs", {"run": run_id, "stage": "binary", "tail_lines": 5}),
        ]

    every, wide, tail = (result(outcome) for outcome in in_process(served, scenario))
    for document in (every, wide, tail):
        encoded = sum(len(log["text"].encode()) for log in document["logs"])
        assert encoded == document["returned_bytes"] <= 64 * 1024, document["returned_bytes"]
    assert every["truncated"] is True and len(every["logs"]) == 8  # 4 stages x 2 streams
    assert every["returned_bytes"] > 60 * 1024  # the budget is used, not wasted
    text = next(log["text"] for log in wide["logs"] if log["stream"] == "stdout")
    assert wide["truncated"] is True and "\ufffd" not in text and text.endswith("é\n")


@pytest.mark.slow
def test_mcp_status_of_a_tampered_manifest_is_a_valid_result(served: Repo) -> None:
    run_id, run_dir = _run(served)
    manifest = manifest_of(run_dir)
    manifest["summary"] = ["a", "list"]
    manifest["status_detail"] = {"an": "object"}
    manifest["commands"][0].update(summary=["x"], exit_code="zero", log_path=7)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))

    async def scenario(client: Client) -> Any:
        return await client.call_tool("status", {"run": run_id})

    state = result(in_process(served, scenario))
    assert state["run_id"] == run_id and state["status"] == "succeeded"
    assert state["status_detail"] is None and state["exit_code"] == 0
    [stage] = state["stages"]
    assert stage["summary"] is None and stage["exit_code"] is None and stage["log_path"] is None


#: Numbers no tool takes, as raw JSON (the SDK's client would not even send some of them).
BAD_NUMBERS = [
    ("wait", '{"run": "%s", "timeout_seconds": NaN}'),
    ("wait", '{"run": "%s", "timeout_seconds": Infinity}'),
    ("wait", '{"run": "%s", "timeout_seconds": 1e999}'),
    ("wait", '{"run": "%s", "timeout_seconds": -1}'),
    ("start", '{"wait_seconds": 1e999}'),
    ("runs", '{"limit": 99999999999999999999}'),
    ("runs", '{"limit": 1e20}'),
    ("logs", '{"run": "%s", "tail_lines": 0}'),
    ("logs", '{"run": "%s", "tail_lines": 1e400}'),
]


@pytest.mark.slow
def test_mcp_numbers_in_tool_inputs_are_bounded(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    run_id, _ = _run(repo)
    with raw_server(repo) as server:
        server.initialize()
        answers = []
        for request_id, (tool, arguments) in enumerate(BAD_NUMBERS, start=1):
            text = arguments % run_id if "%s" in arguments else arguments
            server.send(
                b'{"jsonrpc": "2.0", "id": %d, "method": "tools/call", "params": {"name": "%s", '
                b'"arguments": %s}}' % (request_id, tool.encode(), text.encode())
            )
            answers.append(server.response(request_id))
        server.request(99, "tools/call", {"name": "status", "arguments": {"run": run_id}})
        still = server.response(99)
        server.close()
    for (tool, arguments), answer in zip(BAD_NUMBERS, answers, strict=True):
        failure = error(_tool_result(answer))
        assert failure["exit_code"] == 2 and "\n" not in failure["error"], (tool, arguments)
    assert result(_tool_result(still))["run_id"] == run_id
    assert (
        not (repo.root / ".runs" / "default" / "cli").exists()
        or len(list((repo.root / ".runs" / "default" / "cli").iterdir())) == 1
    )  # the start with a bad wait created no run


def _tool_result(answer: dict[str, Any]) -> Any:
    from mcp.types import CallToolResult

    return CallToolResult.model_validate(answer["result"])
