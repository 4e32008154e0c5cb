"""An agent-like client: run a repository's diagnostics through the codex-orchestrator MCP server.

What a coding agent does with the server, end to end, using the official MCP Python SDK client:
start ``codex-orchestrator mcp`` over stdio, plan the pipeline, start it (detached) and wait
with progress notifications, then read the failed stages' logs and the run's manifest resource,
and, when asked, mark a checklist item with the run as evidence.

    pip install 'codex-pipeline-orchestrator[mcp]'
    python examples/agent_diagnostics.py --root /path/to/repo [--pipeline diagnostics]
        [--task TASK] [--wait 900] [--mark "Run diagnostics"]

Prints what it does on stderr and a JSON summary on stdout; exits with the run's exit code
(0 succeeded, 1 failed, 128+N cancelled), or 2 when a tool call is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository")
    parser.add_argument("--pipeline", default="diagnostics")
    parser.add_argument("--task", help="task id (default: the server's MCP_RUNNER_TASK_ID)")
    parser.add_argument("--wait", type=float, default=900, help="longest wait, in seconds")
    parser.add_argument("--mark", metavar="ITEM", help="checklist item to mark when it succeeds")
    return parser.parse_args()


class ToolRefused(Exception):
    """A tool call that came back as an error: the CLI's message and exit code."""


async def call(
    client: Client, name: str, arguments: dict[str, Any], **options: Any
) -> dict[str, Any]:
    """Call a tool and return its structured result; a tool error raises `ToolRefused`."""
    outcome: CallToolResult = await client.call_tool(name, arguments, **options)
    document = outcome.structured_content or {}
    if outcome.is_error:
        raise ToolRefused(f"{name}: {document.get('error')} (exit {document.get('exit_code')})")
    return document


def say(message: str) -> None:
    print(f"[agent] {message}", file=sys.stderr, flush=True)


async def run_diagnostics(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "codex_orchestrator", "mcp"],
        cwd=str(args.root),
        env=dict(os.environ),
    )
    async with Client(stdio_client(server)) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        say(f"server offers: {', '.join(tools)}")
        task = {"task": args.task} if args.task else {}

        plan = await call(client, "plan", {"pipeline": args.pipeline, **task})
        say(f"plan {plan['pipeline']['id']}: " + ", ".join(s["id"] for s in plan["stages"]))

        async def progress(done: float, total: float | None, message: str | None) -> None:
            say(f"progress {done:g}/{total or 0:g}: {message}")

        run = await call(
            client,
            "start",
            {"pipeline": args.pipeline, "wait_seconds": args.wait, **task},
            progress_callback=progress,
        )
        say(f"run {run['run_id']}: {run['status']} (manifest {run['manifest']})")
        if not run["finished"]:
            run = await call(client, "wait", {"run": run["run_id"], "timeout_seconds": args.wait})

        failed = [stage for stage in run["stages"] if stage["status"] == "failed"]
        for stage in failed:
            logs = await call(
                client, "logs", {"run": run["run_id"], "stage": stage["id"], "tail_lines": 20}
            )
            for log in logs["logs"]:
                say(f"--- {stage['id']} {log['stream']} (last lines) ---\n{log['text'].rstrip()}")

        manifest = await client.read_resource(f"run://{run['run_id']}/manifest")
        recorded = json.loads(getattr(manifest.contents[0], "text", "{}"))
        say(f"manifest summary: {recorded.get('summary')!r}")

        marked = None
        if args.mark and run["status"] == "succeeded":
            marked = await call(
                client,
                "tasks_mark",
                {"task": recorded["task_id"], "item": args.mark, "run": run["run_id"]},
            )
            say(f"marked {marked['item']!r} in {', '.join(marked['changed']) or 'no file'}")

    summary = {
        "run_id": run["run_id"],
        "task_id": run["task_id"],
        "pipeline_id": run["pipeline_id"],
        "status": run["status"],
        "status_detail": run["status_detail"],
        "manifest": run["manifest"],
        "failed_stages": [stage["id"] for stage in failed],
        "marked": marked,
    }
    exit_code = run["exit_code"] if run["exit_code"] is not None else 1
    return exit_code, summary


def main() -> int:
    args = parse_args()
    try:
        exit_code, summary = anyio.run(run_diagnostics, args)
    except ToolRefused as refused:
        say(f"refused: {refused}")
        return 2
    print(json.dumps(summary, indent=2))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
