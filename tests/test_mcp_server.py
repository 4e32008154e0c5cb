"""The MCP server through the SDK's own client: tools, schemas, errors, resources, evidence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from codex_orchestrator.mcp.cli_bridge import CliRunner
from conftest import Repo
from helpers.mcp_client import cli_error, error, in_process, over_stdio, result
from helpers.processes import wait_for

ALL_TOOLS = {
    "pipelines",
    "plan",
    "start",
    "status",
    "wait",
    "cancel",
    "resume",
    "runs",
    "logs",
    "tasks_check",
    "tasks_mark",
}
READ_ONLY_TOOLS = {"pipelines", "plan", "status", "wait", "runs", "logs", "tasks_check"}


@pytest.fixture
def served(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """A repo whose environment the in-process server's CLI children inherit."""
    for key, value in repo.env.items():
        monkeypatch.setenv(key, value)
    repo.pipeline(
        {"id": "hello", "command": "echo hello out; echo hello err >&2"},
        {"id": "count", "command": "for i in 1 2 3; do echo line $i; done"},
    )
    return repo


def _finished_run(repo: Repo, *args: str) -> dict[str, Any]:
    code, document = repo.start_json(*args)
    assert code in (0, 1), document
    return document


def test_tool_list_and_schemas(served: Repo) -> None:
    async def scenario(client: Client) -> dict[str, Any]:
        return {tool.name: tool for tool in (await client.list_tools()).tools}

    tools = in_process(served, scenario)
    assert set(tools) == ALL_TOOLS
    for tool in tools.values():
        assert tool.description and tool.input_schema["type"] == "object"
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint == (tool.name in READ_ONLY_TOOLS)
    start = tools["start"].input_schema["properties"]
    assert set(start) == {"pipeline", "task", "wait_seconds"}
    assert start["wait_seconds"]["minimum"] == 0 and start["wait_seconds"]["maximum"] == 3600
    assert tools["tasks_mark"].input_schema["required"] == ["task", "item", "run"]
    assert set(tools["logs"].input_schema["properties"]["stream"]["enum"]) == {
        "stdout",
        "stderr",
        "both",
    }
    assert {"run_id", "status", "finished", "exit_code", "stages", "manifest"} <= set(
        tools["status"].output_schema["properties"]
    )
    assert {"logs", "truncated", "returned_bytes"} <= set(tools["logs"].output_schema["properties"])

    read_only = in_process(served, scenario, read_only=True)
    assert set(read_only) == READ_ONLY_TOOLS


def _schema_defects(
    schema: Any, defs: dict[str, Any], where: str, nested: bool = False
) -> list[str]:
    """Every property without a description, every array without an item type and every
    nested open object without a description, under ``schema`` (``$ref`` followed into
    ``defs``); the tool's description describes its root schemas."""
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _schema_defects(defs[name], defs, f"{where}->{name}", nested)
    found = []
    for name, prop in schema.get("properties", {}).items():
        if not str(prop.get("description") or "").strip():
            found.append(f"{where}.{name}: no description")
        found += _schema_defects(prop, defs, f"{where}.{name}", True)
    for key in ("anyOf", "oneOf", "allOf"):
        for position, option in enumerate(schema.get(key, [])):
            found += _schema_defects(option, defs, f"{where}.{key}[{position}]", nested)
    if schema.get("type") == "array" or "items" in schema:
        items = schema.get("items")
        if not isinstance(items, dict) or not ({"type", "$ref", "anyOf"} & set(items)):
            found.append(f"{where}: array items without a schema ({items!r})")
        else:
            found += _schema_defects(items, defs, f"{where}[]", True)
    open_object = schema.get("type") == "object" and not schema.get("properties")
    if nested and open_object and not str(schema.get("description") or "").strip():
        found.append(f"{where}: an open object without a description")
    return found


def test_every_field_of_every_tool_schema_is_described(served: Repo) -> None:
    async def scenario(client: Client) -> list[Any]:
        return (await client.list_tools()).tools

    defects = []
    for tool in in_process(served, scenario):
        for kind, schema in (("input", tool.input_schema), ("output", tool.output_schema)):
            assert schema is not None, f"{tool.name}: no {kind} schema"
            defects += _schema_defects(schema, schema.get("$defs", {}), f"{tool.name}.{kind}")
    assert defects == []


@pytest.mark.slow
def test_error_results_pass_a_client_that_validates_them_against_the_output_schema(
    served: Repo,
) -> None:
    """The MCP Inspector validates error results too; the SDK's validator is run on them here
    (its own call_tool validates successes only), and jsonschema for good measure."""
    import jsonschema

    async def scenario(client: Client) -> list[tuple[str, Any, Any]]:
        schemas = {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}
        calls = [
            ("plan", {"pipeline": "nope"}),
            ("pipelines", {}),
            ("status", {"run": "no-such-run"}),
            ("tasks_mark", {"task": "t", "item": "x", "run": "no-such-run"}),
            ("logs", {"run": "no-such-run", "tail_lines": 0}),
            ("runs", {"status": "bogus"}),
        ]
        outcomes = []
        for name, arguments in calls:
            outcome = await client.call_tool(name, arguments)
            if outcome.is_error:
                await client.session.validate_tool_result(name, outcome)
            outcomes.append((name, outcome, schemas[name]))
        return outcomes

    outcomes = in_process(served, scenario)
    errors = [(name, outcome, schema) for name, outcome, schema in outcomes if outcome.is_error]
    assert [name for name, _, _ in errors] == ["plan", "status", "tasks_mark", "logs", "runs"]
    for _name, outcome, schema in errors:
        jsonschema.validate(error(outcome), schema)
    for name, outcome, schema in outcomes:
        if name == "pipelines":
            jsonschema.validate(result(outcome), schema)


def test_a_success_without_its_fields_is_still_refused_by_the_schema(served: Repo) -> None:
    """Declaring the error shape does not loosen the schema: an object with neither the
    result's fields nor the error's fails validation."""
    import jsonschema

    async def scenario(client: Client) -> Any:
        return {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}

    schemas = in_process(served, scenario)
    for name, schema in schemas.items():
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"unrelated": 1}, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"error": "x"}, schema)  # an error needs its exit code
        assert name


@pytest.mark.slow
def test_pipelines_lists_pipelines_and_stages_like_the_cli(served: Repo) -> None:
    async def scenario(client: Client) -> Any:
        return await client.call_tool("pipelines", {})

    document = result(in_process(served, scenario))
    assert document == json.loads(served.cli("pipelines", "--format", "json").stdout)
    listed = {pipeline["id"]: pipeline for pipeline in document["pipelines"]}
    assert list(listed) == ["main", "diagnostics"]
    assert [stage["id"] for stage in listed["main"]["stages"]] == ["hello", "count"]
    assert listed["main"]["default"] and not listed["diagnostics"]["default"]
    assert [stage["id"] for stage in listed["diagnostics"]["stages"]][-1] == "spec-guard"


@pytest.mark.slow
def test_plan_answers_like_the_cli_and_errors_carry_its_message(served: Repo) -> None:
    async def scenario(client: Client) -> list[Any]:
        return [
            await client.call_tool("plan", {}),
            await client.call_tool("plan", {"pipeline": "nope"}),
            await client.call_tool("plan", {"pipeline": "../etc"}),
            await client.call_tool("plan", {"task": "a/b"}),
        ]

    plan, unknown, traversal, bad_task = in_process(served, scenario)
    document = result(plan)
    assert document == json.loads(served.cli("plan", "--format", "json").stdout)
    assert [stage["id"] for stage in document["stages"]] == ["hello", "count"]
    assert error(unknown) == cli_error(served, "plan", "nope")
    assert error(traversal) == cli_error(served, "plan", "../etc")
    assert error(bad_task)["exit_code"] == 2 and "invalid task id 'a/b'" in error(bad_task)["error"]
    # the text content says the same for clients that read only text
    assert "unknown pipeline 'nope'" in unknown.content[0].text  # type: ignore[union-attr]


@pytest.mark.slow
def test_status_wait_and_logs_of_a_real_run(served: Repo) -> None:
    run = _finished_run(served)

    async def scenario(client: Client) -> list[Any]:
        return [
            await client.call_tool("status", {"run": run["run_id"]}),
            await client.call_tool("wait", {"run": run["run_id"], "timeout_seconds": 5}),
            await client.call_tool("logs", {"run": run["run_id"]}),
            await client.call_tool(
                "logs", {"run": run["run_id"], "stage": "count", "tail_lines": 1}
            ),
            await client.call_tool("logs", {"run": run["run_id"], "stream": "stderr"}),
            await client.call_tool("status", {"run": "2020-01-01T00-00-00-000Z-00000000"}),
            await client.call_tool("status", {"run": "@last"}),
            await client.call_tool("logs", {"run": run["run_id"][-8:], "stage": "hello"}),
        ]

    status, waited, logs, tail, stderr, unknown, last, by_suffix = in_process(served, scenario)
    assert result(last)["run_id"] == run["run_id"]  # a run reference, as on the command line
    assert result(by_suffix)["run_id"] == run["run_id"]
    state = result(status)
    assert state["run_id"] == run["run_id"] and state["status"] == "succeeded"
    assert state["finished"] is True and state["exit_code"] == 0 and state["stale"] is False
    assert state["manifest"] == run["manifest"]
    assert [(s["id"], s["status"]) for s in state["stages"]] == [
        ("hello", "succeeded"),
        ("count", "succeeded"),
    ]
    assert result(waited)["finished"] is True
    texts = {(log["stage_id"], log["stream"]): log["text"] for log in result(logs)["logs"]}
    assert texts[("hello", "stdout")] == "hello out\n"
    assert texts[("hello", "stderr")] == "hello err\n"
    assert texts[("count", "stdout")] == "line 1\nline 2\nline 3\n"
    assert result(logs)["truncated"] is False
    assert [log["text"] for log in result(tail)["logs"] if log["stream"] == "stdout"] == [
        "line 3\n"
    ]
    assert {log["stream"] for log in result(stderr)["logs"]} == {"stderr"}
    assert error(unknown) == cli_error(served, "status", "2020-01-01T00-00-00-000Z-00000000")


@pytest.mark.slow
def test_logs_return_at_most_64_kib_and_say_when_cut(served: Repo) -> None:
    served.pipeline(
        {"id": "big", "command": "head -c 300000 /dev/zero | tr '\\0' x; echo; echo LAST"},
        {"id": "small", "command": "echo tiny"},
    )
    run = _finished_run(served)

    async def scenario(client: Client) -> Any:
        return await client.call_tool("logs", {"run": run["run_id"], "stream": "stdout"})

    document = result(in_process(served, scenario))
    assert document["truncated"] is True
    assert document["returned_bytes"] <= 64 * 1024
    logs = {log["stage_id"]: log for log in document["logs"]}
    assert logs["small"]["text"] == "tiny\n" and logs["small"]["truncated"] is False
    assert logs["big"]["text"].endswith("x\nLAST\n") and logs["big"]["truncated"] is True
    assert logs["big"]["size_bytes"] == 300000 + 6


@pytest.mark.slow
def test_wait_sends_progress_and_returns_when_the_run_ends(served: Repo) -> None:
    gate = served.root / "gate"
    # the stage runs until a progress update has named it, however loaded the machine
    served.pipeline(
        {"id": "slow", "command": f"until [ -e '{gate}' ]; do sleep 0.05; done; echo slept"}
    )
    # a foreground run of the test's own, in its own session so that the test can end it
    process = served.spawn("start", "--format", "json")
    try:
        run_id = _live_run_id(served)
        updates: list[tuple[float, float | None, str | None]] = []

        async def progress(done: float, total: float | None, message: str | None) -> None:
            updates.append((done, total, message))
            if message and "running slow" in message:
                gate.touch()

        async def scenario(client: Client) -> Any:
            return await client.call_tool(
                "wait", {"run": run_id, "timeout_seconds": 60}, progress_callback=progress
            )

        state = result(in_process(served, scenario))
        assert state["finished"] is True and state["status"] == "succeeded"
        assert 0 < state["waited_seconds"] < 60
        assert updates and updates[-1][:2] == (1, 1)
        assert any(message and "running slow" in message for _, _, message in updates)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.slow
def test_wait_gives_up_after_its_timeout(served: Repo) -> None:
    served.pipeline({"id": "slow", "command": "sleep 30"})
    process = served.spawn("start", "--format", "json")
    try:
        run_id = _live_run_id(served)

        async def scenario(client: Client) -> Any:
            return await client.call_tool("wait", {"run": run_id, "timeout_seconds": 1.5})

        state = result(in_process(served, scenario))
        assert state["finished"] is False and state["status"] == "in_progress"
        assert state["exit_code"] is None and 1.5 <= state["waited_seconds"] < 10
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def _live_run_id(repo: Repo) -> str:
    runs = repo.root / ".runs" / "default" / "cli"
    wait_for(lambda: runs.is_dir() and any((d / "manifest.json").exists() for d in runs.iterdir()))
    return next(d.name for d in runs.iterdir() if (d / "manifest.json").exists())


@pytest.mark.slow
def test_tasks_check_and_mark_on_a_real_checklist(served: Repo) -> None:
    task = "0300-agent"
    run = _finished_run(served, "--task", task)
    items = "- [ ] Run diagnostics — through the MCP server\n- [x] Reviewer hand-off\n"
    mirrors = [f"tasks/tasks-{task}.md", f".agent/task/{task}.md", "docs/TASKS.md"]
    for mirror in mirrors:
        path = served.root / mirror
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Tasks\n\n## {task}\n{items}")

    async def scenario(client: Client) -> list[Any]:
        return [
            await client.call_tool("tasks_check", {"task": task}),
            await client.call_tool(
                "tasks_mark", {"task": task, "item": "Run diagnostics", "run": run["run_id"]}
            ),
            await client.call_tool(
                "tasks_mark", {"task": task, "item": "No such item", "run": run["run_id"]}
            ),
            await client.call_tool(
                "tasks_mark", {"task": task, "item": "--run", "run": run["run_id"]}
            ),
            await client.call_tool(
                "tasks_mark", {"task": task, "item": "reviewer hand-off", "run": run["run_id"]}
            ),
            await client.call_tool("tasks_check", {"task": task}),
        ]

    before, marked, missing, option_like, second, after = in_process(served, scenario)
    problems = result(before)
    # the checked item without evidence, in each of the three mirrors
    assert problems["clean"] is False and problems["problem_count"] == 3
    assert "reviewer hand-off" in json.dumps(problems["tasks"]).lower()
    document = result(marked)
    assert document["evidence"] == run["manifest"]
    assert document["record"] == f"tasks/evidence/{task}.json"
    assert document["changed"] == mirrors
    for mirror in mirrors:
        assert (
            f"- [x] Run diagnostics — through the MCP server; Evidence: `{run['manifest']}`"
            in (served.root / mirror).read_text()
        )
    expected = cli_error(served, "tasks", "mark", task, "No such item", "--run", run["run_id"])
    assert error(missing) == expected
    assert error(option_like)["exit_code"] == 2
    assert result(second)["changed"] == mirrors
    assert result(after) == {
        "tasks": [{"task": task, "problems": [], "notes": []}],
        "problem_count": 0,
        "clean": True,
    }


def test_wrong_argument_types_and_unknown_tools_are_one_line_errors(served: Repo) -> None:
    async def scenario(client: Client) -> list[Any]:
        return [
            await client.call_tool("status", {"run": 5}),
            await client.call_tool("status", {}),
            await client.call_tool("wait", {"run": "r", "timeout_seconds": "soon"}),
            await client.call_tool("wait", {"run": "r", "timeout_seconds": -1}),
            await client.call_tool("logs", {"run": "r", "stream": "stdin"}),
            await client.call_tool("runs", {"limit": 10**9}),
            await client.call_tool("nope", {}),
            await client.call_tool("status", {"run": "x" * 5_000_000}),
            await client.call_tool("cancel", {"run": "r", "reason": "two\nlines"}),
            await client.call_tool("tasks_mark", {"task": "t", "item": "a\0b", "run": "r"}),
            await client.call_tool("plan", {}),
        ]

    *failures, plan = in_process(served, scenario)
    for failure in failures:
        document = error(failure)
        assert document["exit_code"] == 2
        assert "\n" not in document["error"] and len(document["error"]) < 400
    assert "argument 'run'" in error(failures[0])["error"]
    assert "unknown tool 'nope'" in error(failures[6])["error"]
    assert "invalid run id" in error(failures[7])["error"]
    assert result(plan)["pipeline"]["id"] == "main"


def test_manifest_resource_and_report_resource(served: Repo) -> None:
    run = _finished_run(served)

    async def scenario(client: Client) -> list[Any]:
        templates = await client.list_resource_templates()
        manifest = await client.read_resource(f"run://{run['run_id']}/manifest")
        failures = []
        for uri in (
            "run://2020-01-01T00-00-00-000Z-00000000/manifest",
            "run://..%2F..%2Fetc/manifest",
        ):
            try:
                await client.read_resource(uri)
            except Exception as failure:  # the SDK raises its MCPError
                failures.append(str(failure))
        try:
            report = await client.read_resource(f"run://{run['run_id']}/report")
            failures.append(report.contents[0].text)  # type: ignore[union-attr]
        except Exception as failure:
            failures.append(str(failure))
        return [templates, manifest, failures]

    templates, manifest, failures = in_process(served, scenario)
    assert {t.uri_template for t in templates.resource_templates} == {
        "run://{run_id}/manifest",
        "run://{run_id}/report",
    }
    assert json.loads(manifest.contents[0].text) == served.manifest(run)
    assert "unknown run '2020-01-01T00-00-00-000Z-00000000'" in failures[0]
    assert "invalid run id" in failures[1] or "unknown" in failures[1].lower()
    has_report = (Path(__file__).parents[1] / "src/codex_orchestrator/commands/report.py").exists()
    if has_report:
        assert "<html" in failures[2].lower()
    else:
        assert "no report command" in failures[2]


def test_without_the_extra_mcp_exits_2_with_the_install_command(repo: Repo) -> None:
    code = (
        "import sys; sys.modules['mcp'] = None\n"
        "from codex_orchestrator.cli import main\n"
        "sys.exit(main(['mcp']))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=repo.root, env=repo.env, capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert "pip install 'codex-pipeline-orchestrator[mcp]'" in completed.stderr
    assert "pipx inject codex-pipeline-orchestrator 'mcp>=2.3,<3'" in completed.stderr
    assert "Traceback" not in completed.stderr and completed.stdout == ""


def test_plan_and_status_do_not_import_the_sdk(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    code = (
        "import sys\n"
        "from codex_orchestrator.cli import main\n"
        "main(['plan', '--format', 'json'])\n"
        "assert not any(name == 'mcp' or name.startswith(('mcp.', 'anyio')) for name in sys.modules)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=repo.root, env=repo.env, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr


def test_runner_ends_a_long_running_child_when_asked(served: Repo) -> None:
    served.pipeline({"id": "slow", "command": "sleep 30"})
    process = served.spawn("start", "--format", "json")
    try:
        run_id = _live_run_id(served)
        seen: list[int] = []

        async def main() -> None:
            runner = CliRunner(served.root)
            async with anyio.create_task_group() as group:
                # `status --watch` runs until the run ends: a child that will not end by itself
                group.start_soon(runner.capture, ["status", run_id, "--watch"], 1024)
                with anyio.fail_after(20):
                    while not runner.running:
                        await anyio.sleep(0.05)
                seen.extend(runner.running)
                await runner.end_all()
                group.cancel_scope.cancel()

        anyio.run(main)
        assert len(seen) == 1
        wait_for(lambda: not os.path.exists(f"/proc/{seen[0]}"), timeout=10)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


@pytest.mark.slow
def test_the_sdk_client_over_real_stdio(served: Repo) -> None:
    run = _finished_run(served)

    async def main() -> tuple[set[str], dict[str, Any], dict[str, Any]]:
        async with over_stdio(served) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            status = result(await client.call_tool("status", {"run": run["run_id"]}))
            failure = error(await client.call_tool("plan", {"pipeline": "nope"}))
            return names, status, failure

    names, status, failure = anyio.run(main)
    assert names == ALL_TOOLS
    assert status["status"] == "succeeded" and status["run_id"] == run["run_id"]
    assert failure == cli_error(served, "plan", "nope")
