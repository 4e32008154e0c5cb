"""``codex-orchestrator mcp``: the Model Context Protocol server for coding agents.

Each tool validates its arguments, then runs the real CLI (see `mcp_cli`) and returns the
command's JSON document as structured output; a CLI error becomes a tool error carrying the
command's one-line message and exit code. The resources only read: a run's manifest is read
once, never through a link, and served as read; its report is rendered in memory, never
written. The tools, their fields and their bounds are listed in docs/mcp.md. This is the only
module that imports the MCP SDK.
"""

from __future__ import annotations

import fcntl
import io
import os
import signal
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.stdio import stdio_server
from mcp.types import CallToolResult, TextContent, Tool, ToolAnnotations
from pydantic import Field, ValidationError
from typing_extensions import TypedDict

from codex_orchestrator import __version__
from codex_orchestrator.errors import EXIT_USAGE, OrchestratorError, UsageError
from codex_orchestrator.mcp.cli_bridge import CliError, CliRunner
from codex_orchestrator.records.cache_field import cache_of, cache_totals, hit_from, saved_seconds
from codex_orchestrator.records.manifest import Manifest, parse_manifest, read_manifest_bytes
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.runref import check_reference, resolve_run
from codex_orchestrator.records.stage_logs import fair_shares
from codex_orchestrator.records.statuses import TERMINAL_RUN_STATUSES, RunStatus, run_exit_code
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.jsonio import json_text

#: Most bytes of log text one `logs` call returns, shared fairly among the logs it returns.
LOG_LIMIT = 64 * 1024
#: The CLI's `logs --format json` holds up to 1 MiB of each log; this bounds the whole document.
LOGS_DOCUMENT_LIMIT = 64 * 1024 * 1024
MAX_WAIT_SECONDS = 3600.0
MAX_TAIL_LINES = 100_000
MAX_RUNS = 1000
MAX_TEXT = 2000
#: How often `wait` (and `start`/`resume` with ``wait_seconds``) looks at the run.
POLL_SECONDS = 1.0
READ_ONLY_TOOLS = ("pipelines", "plan", "status", "wait", "runs", "logs", "tasks_check")
ACTOR = "mcp"

INSTRUCTIONS = """\
Runs this repository's codex-orchestrator pipelines and reads their records.
Typical flow: pipelines -> plan -> start(wait_seconds=...) -> wait -> status/logs -> tasks_mark.
Runs are detached: they go on if this server stops. Ids are 1-128 characters of
A-Z a-z 0-9 _ - (starting with a letter or digit). Errors carry the CLI's message
and exit code in structuredContent {"error", "exit_code"} (2: bad input)."""

TaskArg = Annotated[
    str | None,
    Field(description="task id; default: the server's MCP_RUNNER_TASK_ID, else 'default'"),
]
PipelineArg = Annotated[
    str | None, Field(description="pipeline id; default: the config's defaultPipeline")
]
RunArg = Annotated[
    str,
    Field(
        description="the run: its id (2026-01-01T00-00-00-000Z-0a1b2c3d), a unique prefix or "
        "suffix of it (6+ characters, e.g. 0a1b2c3d), or @last (the task's newest run)"
    ),
]
RunFilter = Literal["queued", "in_progress", "succeeded", "failed", "cancelled", "skipped", "stale"]
WaitArg = Annotated[
    float,
    Field(
        ge=0,
        le=MAX_WAIT_SECONDS,
        allow_inf_nan=False,
        description="seconds to wait for the run to end (0: return at once)",
    ),
]


# Every field of every result is described (agents read the schema, not docs/mcp.md); a list's
# items are typed objects, or, for records that may be tampered with, described open objects.
OpenObject = dict[str, Any]


class PipelineInfo(TypedDict):
    id: Annotated[str, Field(description="pipeline id")]
    title: Annotated[str, Field(description="the pipeline's title")]
    description: Annotated[str | None, Field(description="what the pipeline does, if given")]
    source: Annotated[str, Field(description="'config' (codex.orchestrator.json) or 'builtin'")]


class PlanStage(TypedDict, total=False):
    index: Annotated[int, Field(description="1-based position in the pipeline")]
    id: Annotated[str, Field(description="stage id")]
    title: Annotated[str, Field(description="the stage's title")]
    kind: Annotated[str, Field(description="'command' or 'subpipeline'")]
    needs: Annotated[list[str], Field(description="ids of the stages this one waits for")]
    command: Annotated[str | None, Field(description="the shell command (null: skipped)")]
    why: Annotated[str | None, Field(description="why the built-in diagnostics chose it")]
    cwd: Annotated[str | None, Field(description="working directory relative to the root")]
    allow_failure: Annotated[bool, Field(description="a failure does not fail the run")]
    timeout_seconds: Annotated[float | None, Field(description="time limit, if any")]
    skip_reason: Annotated[str | None, Field(description="why it would be skipped, if so")]
    requires: Annotated[list[str], Field(description="executables it needs on PATH")]
    retries: Annotated[int, Field(description="extra attempts after a failure")]
    retry_delay_seconds: Annotated[float, Field(description="pause between attempts")]
    pipeline: Annotated[str, Field(description="the child pipeline (subpipeline stages)")]
    optional: Annotated[bool, Field(description="a failed child run is a skip (subpipeline)")]


class PlanResult(TypedDict):
    task_id: Annotated[str, Field(description="the task the run would belong to")]
    pipeline: Annotated[PipelineInfo, Field(description="the resolved pipeline")]
    stages: Annotated[list[PlanStage], Field(description="the stages, in order")]
    graph: Annotated[
        OpenObject,
        Field(description="how the stages would run: levels of stages run at once, max_parallel"),
    ]


class PipelineStage(TypedDict):
    id: Annotated[str, Field(description="stage id")]
    title: Annotated[str, Field(description="the stage's title")]
    kind: Annotated[str, Field(description="'command' or 'subpipeline'")]
    needs: Annotated[list[str], Field(description="ids of the stages this one waits for")]


class PipelineEntry(PipelineInfo):
    default: Annotated[bool, Field(description="the pipeline run when none is named")]
    stages: Annotated[list[PipelineStage], Field(description="its stages, in order")]


class PipelinesResult(TypedDict):
    default_pipeline: Annotated[str, Field(description="the pipeline run when none is named")]
    pipelines: Annotated[
        list[PipelineEntry], Field(description="configured pipelines, then built-in ones")
    ]


class StageState(TypedDict):
    index: Annotated[int | None, Field(description="1-based position in the pipeline")]
    id: Annotated[str | None, Field(description="stage id")]
    status: Annotated[
        str | None, Field(description="pending, running, succeeded, failed or skipped")
    ]
    summary: Annotated[str | None, Field(description="one line: result, or why skipped")]
    exit_code: Annotated[int | None, Field(description="the command's exit code, if it ended")]
    log_path: Annotated[str | None, Field(description="its output log, relative to the root")]
    error_file: Annotated[str | None, Field(description="its error file, if it failed")]
    sub_run_id: Annotated[str | None, Field(description="the child run (subpipeline stages)")]
    cache_status: Annotated[
        str | None,
        Field(description="the stage cache: hit (not run; cached_from_run ran it), miss or off"),
    ]
    cached_from_run: Annotated[
        str | None, Field(description="for a hit: the run whose stage really ran")
    ]
    saved_seconds: Annotated[
        float | None, Field(description="for a hit: the seconds the original run of it took")
    ]


class RunState(TypedDict):
    run_id: Annotated[str, Field(description="run id")]
    task_id: Annotated[str | None, Field(description="the task the run belongs to")]
    pipeline_id: Annotated[str | None, Field(description="the pipeline it runs")]
    status: Annotated[
        str, Field(description="queued, in_progress, succeeded, failed, cancelled (or skipped)")
    ]
    status_detail: Annotated[
        str | None, Field(description="why it ended so, e.g. stage:test:failed, signal:SIGTERM")
    ]
    finished: Annotated[bool, Field(description="the run has ended")]
    exit_code: Annotated[
        int | None,
        Field(
            description="the CLI exit code of the finished run (null while it runs); in an "
            "error result, the failed call's exit code"
        ),
    ]
    stale: Annotated[bool, Field(description="in progress by its record, but its driver is gone")]
    heartbeat_age_seconds: Annotated[
        float | None, Field(description="seconds since the driver's last heartbeat")
    ]
    started_at: Annotated[str | None, Field(description="start time, ISO 8601 UTC")]
    completed_at: Annotated[str | None, Field(description="end time, ISO 8601 UTC")]
    manifest: Annotated[str | None, Field(description="manifest.json, relative to the root")]
    artifact_root: Annotated[str | None, Field(description="the run's directory")]
    log_path: Annotated[str | None, Field(description="the run's event log")]
    stages: Annotated[list[StageState], Field(description="each stage's state, in order")]
    cached_stages: Annotated[int, Field(description="stages served from the stage cache")]
    saved_seconds: Annotated[
        float, Field(description="the seconds the cached stages' original runs took")
    ]
    child_runs: Annotated[
        list[
            Annotated[
                OpenObject,
                Field(description="a child run: run_id, pipeline_id, stage_id, status, manifest"),
            ]
        ],
        Field(description="runs started by its subpipeline stages"),
    ]
    hint: Annotated[str | None, Field(description="what to do next, when there is a hint")]
    waited_seconds: Annotated[float, Field(description="how long this call waited")]


class CancelResult(RunState):
    action: Annotated[
        str | None, Field(description="what cancel did, e.g. cancelled, already-ended")
    ]


class RunRow(TypedDict):
    run_id: Annotated[str, Field(description="run id")]
    task_id: Annotated[str, Field(description="its task")]
    pipeline_id: Annotated[str, Field(description="its pipeline")]
    status: Annotated[str, Field(description="its status (stale: see 'stale')")]
    started_at: Annotated[str | None, Field(description="start time, ISO 8601 UTC")]
    completed_at: Annotated[str | None, Field(description="end time, ISO 8601 UTC")]
    duration_seconds: Annotated[float | None, Field(description="how long it ran")]
    failed_stage: Annotated[str | None, Field(description="the stage that failed it")]
    stale: Annotated[bool, Field(description="in progress by its record, driver gone")]
    pruned: Annotated[bool, Field(description="its directory was pruned")]
    manifest: Annotated[str | None, Field(description="manifest.json, relative to the root")]


class RunsResult(TypedDict):
    runs: Annotated[list[RunRow], Field(description="runs, newest first")]


class LogText(TypedDict):
    run_id: Annotated[str, Field(description="run id")]
    index: Annotated[int, Field(description="the stage's 1-based position")]
    stage_id: Annotated[str, Field(description="stage id")]
    attempt: Annotated[int | None, Field(description="attempt number (retried stages)")]
    stream: Annotated[str, Field(description="stdout or stderr")]
    path: Annotated[str, Field(description="the log file, relative to the root")]
    size_bytes: Annotated[int, Field(description="the log file's size")]
    text: Annotated[str, Field(description="the log's text (its tail when cut)")]
    truncated: Annotated[bool, Field(description="text is only the tail of the log")]


class LogsResult(TypedDict):
    run_id: Annotated[str, Field(description="run id")]
    status: Annotated[str | None, Field(description="the run's status")]
    stage: Annotated[str | None, Field(description="the stage asked for (null: every stage)")]
    stream: Annotated[str, Field(description="stdout, stderr or both")]
    logs: Annotated[list[LogText], Field(description="one entry per stage and stream")]
    returned_bytes: Annotated[int, Field(description="bytes of log text returned in all")]
    truncated: Annotated[bool, Field(description="some log was cut to fit")]


class TaskProblem(TypedDict):
    file: Annotated[str, Field(description="the file, relative to the root")]
    line: Annotated[int | None, Field(description="1-based line, when it has one")]
    kind: Annotated[str, Field(description="the kind of problem, e.g. missing-evidence")]
    message: Annotated[str, Field(description="what is wrong and how to fix it")]
    item: Annotated[str | None, Field(description="the checklist item concerned")]
    evidence: Annotated[str | None, Field(description="the evidence path concerned")]


class TaskProblems(TypedDict):
    task: Annotated[str, Field(description="task id")]
    problems: Annotated[list[TaskProblem], Field(description="its problems (empty: clean)")]
    notes: Annotated[
        list[TaskProblem],
        Field(
            description="not problems: evidence whose manifest is absent, vouched for by "
            "the committed evidence record; evidence whose cached stages ran in another "
            "worktree, naming that run's manifest"
        ),
    ]


class TasksCheckResult(TypedDict):
    tasks: Annotated[list[TaskProblems], Field(description="each task checked")]
    problem_count: Annotated[int, Field(description="problems found in all")]
    clean: Annotated[bool, Field(description="no problem found")]


class CachedStageProof(TypedDict):
    stage: Annotated[str, Field(description="a stage of the cited run served from the cache")]
    run_id: Annotated[str, Field(description="the run that really ran it")]
    manifest: Annotated[
        str, Field(description="that run's manifest (relative to the root when inside it)")
    ]
    worktree: Annotated[
        str | None, Field(description="the other worktree holding that run; null: this one")
    ]


class TasksMarkResult(TypedDict):
    task: Annotated[str, Field(description="task id")]
    item: Annotated[str, Field(description="the checklist item marked")]
    run_id: Annotated[str, Field(description="the run cited")]
    evidence: Annotated[str, Field(description="the manifest path written as evidence")]
    record: Annotated[
        str, Field(description="the committed evidence record written (tasks/evidence/<task>.json)")
    ]
    changed: Annotated[list[str], Field(description="mirror files changed")]
    unchanged: Annotated[list[str], Field(description="mirror files already marked")]
    without_item: Annotated[list[str], Field(description="mirror files without the item")]
    absent: Annotated[list[str], Field(description="mirror files that do not exist")]
    cached: Annotated[
        list[CachedStageProof],
        Field(description="the cited run's cached stages and where each really ran"),
    ]


#: The shape of an error result, declared in every tool's output schema: a client that
#: validates an error's structured content against the schema (the MCP Inspector does) accepts
#: it. A success has the tool's own required fields; an error has these two.
ERROR_PROPERTIES: dict[str, Any] = {
    "error": {"type": "string", "description": "error results only: the CLI's one-line message"},
    "exit_code": {
        "type": "integer",
        "description": "error results only: the CLI's exit code (2: bad input)",
    },
}


def with_error_shape(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an object schema) also admitting ``{"error", "exit_code"}``."""
    properties = {**ERROR_PROPERTIES, **schema.get("properties", {})}
    success = {"required": schema.get("required", [])}
    rest = {key: value for key, value in schema.items() if key not in ("properties", "required")}
    return {
        **rest,
        "properties": properties,
        "anyOf": [success, {"required": list(ERROR_PROPERTIES)}],
    }


class _Server(MCPServer[Any]):
    """MCPServer whose argument-validation errors are one line with exit code 2, like the CLI's,
    whose output schemas admit the error shape (`with_error_shape`), and whose stdin is read
    without a thread (`_StdinLines`)."""

    async def list_tools(self) -> list[Tool]:
        """The tools, each output schema admitting an error result as well."""
        return [
            tool.model_copy(update={"output_schema": with_error_shape(tool.output_schema)})
            if tool.output_schema is not None
            else tool
            for tool in await super().list_tools()
        ]

    async def run_stdio_async(self) -> None:
        """Serve over stdio until stdin closes (or the task is cancelled: a signal)."""
        async with stdio_server(stdin=_StdinLines.claim()) as (read_stream, write_stream):
            await self._lowlevel_server.run(
                read_stream, write_stream, self._lowlevel_server.create_initialization_options()
            )

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as error:
            if isinstance(error.__cause__, ValidationError):
                return _error(f"tool {name}: {_one_line(error.__cause__)}", EXIT_USAGE)
            known = [tool.name for tool in await self.list_tools()]
            if name not in known:
                return _error(f"unknown tool {name[:80]!r}; tools: {', '.join(known)}", EXIT_USAGE)
            raise


class _StdinLines(anyio.AsyncFile[str]):
    """The server's stdin, line by line, waited for in the event loop, not in a thread.

    The SDK reads stdin in a worker thread blocked in ``read()``, which no cancellation can
    interrupt: an idle server told to stop (SIGTERM, SIGINT, SIGHUP) would wait for the next
    line before it could exit. Waiting for readability in the event loop ends with the task.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(io.StringIO())
        self._fd = fd
        self._buffer = bytearray()
        self._ended = False
        # a regular file is always readable, and the event loop refuses to wait on one
        self._pollable = not stat.S_ISREG(os.fstat(fd).st_mode)

    @classmethod
    def claim(cls) -> _StdinLines:
        """Take the protocol's stdin from descriptor 0, which then reads /dev/null (so no code
        of the server can read the protocol's bytes by accident)."""
        wire = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        return cls(wire)

    async def readline(self) -> str:
        """The next line, ``""`` at the end of the input."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0 or self._ended:
                cut = end + 1 if end >= 0 else len(self._buffer)
                line = bytes(self._buffer[:cut])
                del self._buffer[:cut]
                return line.decode("utf-8", "replace")
            if self._pollable:
                try:
                    await anyio.wait_readable(self._fd)
                except OSError:  # a file the event loop cannot watch: reading it never blocks
                    self._pollable = False
            chunk = os.read(self._fd, 1 << 16)
            self._ended = not chunk
            self._buffer += chunk


def build_server(root: Path, read_only: bool = False) -> tuple[MCPServer[Any], CliRunner]:
    """The MCP server for the repository at ``root`` and the runner that owns its children."""
    cli = CliRunner(root)
    server = _Server(
        "codex-orchestrator",
        title="codex-orchestrator",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )
    tools = _Tools(cli)
    for name, description, read_only_tool in _TOOL_TABLE:
        if read_only and name not in READ_ONLY_TOOLS:
            continue
        server.add_tool(
            getattr(tools, name),
            name=name,
            description=description,
            annotations=ToolAnnotations(read_only_hint=read_only_tool, open_world_hint=False),
        )
    resources = _Resources(root)
    for uri, name, description, mime_type in _RESOURCE_TABLE:
        server.resource(uri, name=name, description=description, mime_type=mime_type)(
            getattr(resources, name)
        )
    return server, cli


async def serve(root: Path, read_only: bool = False) -> None:
    """Serve over stdio until stdin closes or SIGTERM/SIGINT/SIGHUP; end our own children."""
    server, cli = build_server(root, read_only)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_stop_on_signal, group.cancel_scope)
            await server.run_stdio_async()
            group.cancel_scope.cancel()
    finally:
        await cli.end_all()


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for _ in signals:
            scope.cancel()
            return


class _Tools:
    """The tool functions; their signatures are the tools' input schemas."""

    def __init__(self, cli: CliRunner) -> None:
        self.cli = cli

    async def pipelines(self) -> Annotated[CallToolResult, PipelinesResult]:
        async def body() -> dict[str, Any]:
            return await self.cli.document("pipelines")

        return await _respond(body)

    async def plan(
        self, pipeline: PipelineArg = None, task: TaskArg = None
    ) -> Annotated[CallToolResult, PlanResult]:
        async def body() -> dict[str, Any]:
            return await self.cli.document("plan", *_pipeline_task(pipeline, task))

        return await _respond(body)

    async def start(
        self,
        ctx: Context[Any, Any],
        pipeline: PipelineArg = None,
        task: TaskArg = None,
        wait_seconds: WaitArg = 0,
    ) -> Annotated[CallToolResult, RunState]:
        async def body() -> dict[str, Any]:
            arguments = _pipeline_task(pipeline, task)
            started = await self.cli.document("start", *arguments, "--detach", detaching=True)
            return await self._follow(ctx, str(started["run_id"]), wait_seconds)

        return await _respond(body)

    async def status(self, run: RunArg) -> Annotated[CallToolResult, RunState]:
        async def body() -> dict[str, Any]:
            return await self._state(_run_id(run))

        return await _respond(body)

    async def wait(
        self,
        ctx: Context[Any, Any],
        run: RunArg,
        timeout_seconds: Annotated[
            float,
            Field(
                ge=0,
                le=MAX_WAIT_SECONDS,
                allow_inf_nan=False,
                description="longest wait, in seconds",
            ),
        ] = 60,
    ) -> Annotated[CallToolResult, RunState]:
        async def body() -> dict[str, Any]:
            return await self._follow(ctx, _run_id(run), timeout_seconds)

        return await _respond(body)

    async def cancel(
        self,
        run: RunArg,
        reason: Annotated[
            str | None, Field(description="why, recorded in the run's cancel_events")
        ] = None,
    ) -> Annotated[CallToolResult, CancelResult]:
        async def body() -> dict[str, Any]:
            run_id = _run_id(run)
            arguments = ["cancel", run_id, f"--actor={ACTOR}", "--wait"]
            if reason is not None:
                arguments.append(f"--reason={_text(reason, 'reason')}")
            # exit 1: the run could not be stopped in time; the state below says where it is
            cancelled = await self.cli.document(*arguments, accept=frozenset({0, 1}))
            state = await self._state(str(cancelled.get("run_id") or run_id))
            return {**state, "action": cancelled.get("action")}

        return await _respond(body)

    async def resume(
        self, ctx: Context[Any, Any], run: RunArg, wait_seconds: WaitArg = 0
    ) -> Annotated[CallToolResult, RunState]:
        async def body() -> dict[str, Any]:
            resumed = await self.cli.document(
                "resume", _run_id(run), f"--actor={ACTOR}", "--detach", detaching=True
            )
            return await self._follow(ctx, str(resumed["run_id"]), wait_seconds)

        return await _respond(body)

    async def runs(
        self,
        task: Annotated[str | None, Field(description="only this task's runs")] = None,
        status: Annotated[RunFilter | None, Field(description="only runs in this status")] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_RUNS, description="newest N runs")] = 20,
    ) -> Annotated[CallToolResult, RunsResult]:
        async def body() -> dict[str, Any]:
            arguments = ["runs", "--limit", str(limit)]
            if task is not None:
                arguments += ["--task", _checked_id(task, "task")]
            if status is not None:
                arguments += ["--status", status]
            return await self.cli.document(*arguments)

        return await _respond(body)

    async def logs(
        self,
        run: RunArg,
        stage: Annotated[str | None, Field(description="stage id; default: every stage")] = None,
        stream: Annotated[
            Literal["stdout", "stderr", "both"], Field(description="which output to return")
        ] = "both",
        tail_lines: Annotated[
            int | None, Field(ge=1, le=MAX_TAIL_LINES, description="only the last N lines")
        ] = None,
    ) -> Annotated[CallToolResult, LogsResult]:
        async def body() -> dict[str, Any]:
            return await self._logs(_run_id(run), stage, stream, tail_lines)

        return await _respond(body)

    async def tasks_check(
        self, task: Annotated[str | None, Field(description="task id; default: every task")] = None
    ) -> Annotated[CallToolResult, TasksCheckResult]:
        async def body() -> dict[str, Any]:
            arguments = ["tasks", "check"]
            if task is not None:
                arguments.append(_checked_id(task, "task"))
            document = await self.cli.document(*arguments, accept=frozenset({0, 1}))
            return {**document, "clean": not document.get("problem_count")}

        return await _respond(body)

    async def tasks_mark(
        self,
        task: Annotated[str, Field(description="task id")],
        item: Annotated[str, Field(description="the checklist item's text (up to ' — ' or ';')")],
        run: RunArg,
    ) -> Annotated[CallToolResult, TasksMarkResult]:
        async def body() -> dict[str, Any]:
            return await self.cli.document(
                "tasks",
                "mark",
                "--run",
                _run_id(run),
                # After "--" an item that starts with "-" stays an item.
                "--",
                _checked_id(task, "task"),
                _text(item, "item"),
            )

        return await _respond(body)

    async def _state(self, run_id: str) -> dict[str, Any]:
        return run_state(await self.cli.document("status", run_id))

    async def _follow(self, ctx: Context[Any, Any], run_id: str, seconds: float) -> dict[str, Any]:
        """The run's state once it ends, goes stale, or ``seconds`` pass; progress on the way."""
        began = time.monotonic()
        deadline = began + seconds
        while True:
            state = await self._state(run_id)
            run_id = state["run_id"]  # a reference (@last) names the same run while waiting
            state["waited_seconds"] = round(time.monotonic() - began, 3)
            done = sum(
                1 for stage in state["stages"] if stage["status"] in ("succeeded", "skipped")
            )
            total = len(state["stages"]) or None
            if seconds > 0:
                await ctx.report_progress(done, total, _progress_message(state))
            remaining = deadline - time.monotonic()
            if state["finished"] or state["stale"] or remaining <= 0:
                return state
            await anyio.sleep(min(POLL_SECONDS, remaining))

    async def _logs(
        self, run_id: str, stage: str | None, stream: str, tail_lines: int | None
    ) -> dict[str, Any]:
        arguments = ["logs", run_id]
        if stage is not None:
            arguments.append(_checked_id(stage, "stage"))
        # the CLI sends no more log than the answer can hold: binary logs of any size fit
        arguments += ["--stream", stream, "--max-bytes", str(LOG_LIMIT)]
        if tail_lines is not None:
            arguments += ["--tail", str(tail_lines)]
        document = await self.cli.document(*arguments, limit=LOGS_DOCUMENT_LIMIT)
        logs = fit_logs(document.get("logs") or [], LOG_LIMIT)
        return {
            "run_id": document.get("run_id", run_id),
            "status": document.get("status"),
            "stage": stage,
            "stream": stream,
            "logs": logs,
            "returned_bytes": sum(len(log["text"].encode()) for log in logs),
            "truncated": any(log["truncated"] for log in logs),
        }


class _Resources:
    """``run://{run_id}/manifest`` and ``run://{run_id}/report``: they read, never write.

    The manifest is read once, never through a link, checked, and served as read (another
    read after a check could meet a file swapped for a link meanwhile); the report is rendered
    in memory from that manifest and the run directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    async def manifest(self, run_id: str) -> str:
        data, _, _ = self._read(run_id)
        return data.decode("utf-8", "replace")

    async def report(self, run_id: str) -> str:
        from codex_orchestrator.view.report import render_run_report

        _, run_dir, manifest = self._read(run_id)
        html: str = await anyio.to_thread.run_sync(render_run_report, run_dir, manifest)
        return html

    def _read(self, run_id: str) -> tuple[bytes, Path, Manifest]:
        """The run's manifest bytes (read once), its directory and the checked manifest."""
        try:
            workspace = Workspace.from_env(
                {**os.environ, "CODEX_ORCHESTRATOR_ROOT": str(self.root)}
            )
            run_dir = resolve_run(workspace, run_id).run_dir
        except OrchestratorError as error:
            raise ResourceNotFoundError(error.message) from None
        shown = workspace.display(RunLayout(run_dir).manifest)
        try:
            data = read_manifest_bytes(RunLayout(run_dir).manifest, shown)
            return data, run_dir, parse_manifest(data, shown)
        except OrchestratorError as error:
            raise ResourceError(error.message) from None


_TOOL_TABLE = (
    (
        "pipelines",
        "List the pipelines (configured, then built-in) with their stages; the default one "
        "is marked.",
        True,
    ),
    ("plan", "Show the stages a pipeline would run (nothing runs, nothing is written).", True),
    (
        "start",
        "Start a pipeline run, detached (it outlives this server). Returns the run's state at "
        "once, or after waiting up to wait_seconds with progress notifications.",
        False,
    ),
    ("status", "A run's state: status, stages, heartbeat, manifest path.", True),
    ("wait", "Wait up to timeout_seconds for a run to end (progress notifications).", True),
    (
        "cancel",
        "Cancel a live run and its child runs; waits for its records. 'action' says what was "
        "done (e.g. already-ended).",
        False,
    ),
    (
        "resume",
        "Resume a failed, cancelled or dead run, detached; re-runs the stages that did not "
        "succeed. Optionally waits up to wait_seconds.",
        False,
    ),
    ("runs", "List runs, newest first (all tasks unless task is given).", True),
    (
        "logs",
        f"A run's stored stage output (at most {LOG_LIMIT // 1024} KiB, the tail; "
        "'truncated' says when cut).",
        True,
    ),
    ("tasks_check", "Check task checklists and their manifest evidence.", True),
    (
        "tasks_mark",
        "Mark a checklist item done in every mirror, citing a succeeded run's manifest.",
        False,
    ),
)

#: The run resources: URI template, name (also the `_Resources` method), description, MIME type.
_RESOURCE_TABLE = (
    ("run://{run_id}/manifest", "manifest", "a run's manifest.json (JSON)", "application/json"),
    (
        "run://{run_id}/report",
        "report",
        "a run's self-contained HTML report (rendered on each read; nothing is written)",
        "text/html",
    ),
)


def run_state(status: dict[str, Any]) -> dict[str, Any]:
    """The `RunState` of a ``status --format json`` document.

    A manifest may be tampered with (a summary that is a list): a field that is not of its
    declared type is left out (None), so that the result is valid, never a schema error.
    """
    finished = status.get("status") in TERMINAL_RUN_STATUSES
    computed = ("stages", "child_runs", "exit_code", "waited_seconds", "cached_stages")
    state = _typed(status, RunState, (*computed, "saved_seconds"))
    hits, saved = cache_totals(status.get("commands"))
    state.update(
        finished=finished,
        exit_code=(
            run_exit_code(RunStatus(status["status"]), state["status_detail"]) if finished else None
        ),
        stale=status.get("stale") is True,
        stages=[_stage_state(command) for command in status.get("commands") or []],
        cached_stages=hits,
        saved_seconds=round(saved, 3),
        child_runs=status.get("child_runs") or [],
        waited_seconds=0.0,
    )
    return state


def _stage_state(command: dict[str, Any]) -> dict[str, Any]:
    state = _typed(command, StageState, ("cache_status", "cached_from_run", "saved_seconds"))
    field = cache_of(command) if isinstance(command, dict) else None
    source = hit_from(command) if isinstance(command, dict) else None
    state.update(
        cache_status=field["status"] if field is not None else None,
        cached_from_run=source[0] if source is not None else None,
        saved_seconds=saved_seconds(command) if source is not None else None,
    )
    return state


def fit_logs(logs: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Cut the logs' texts to ``limit`` bytes of UTF-8 in all, keeping each one's tail.

    Small logs are returned whole; what they leave is shared evenly among the larger ones
    (`fair_shares`). Each cut falls on a character boundary, so the text returned is never
    more bytes than its share.
    """
    encoded = [str(log.get("text", "")).encode("utf-8", "replace") for log in logs]
    shares = fair_shares([len(data) for data in encoded], limit)
    fitted = []
    for log, data, share in zip(logs, encoded, shares, strict=True):
        start = len(data) - share
        while start < len(data) and data[start] & 0xC0 == 0x80:  # inside a character
            start += 1
        fitted.append(
            {
                **{key: log.get(key) for key in LogText.__annotations__},
                "text": data[start:].decode("utf-8"),
                "truncated": bool(log.get("truncated")) or start > 0,
            }
        )
    return fitted


def _typed(document: dict[str, Any], schema: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of ``schema`` (a TypedDict) from ``document``, each one None unless it is of
    its declared type (a bool is no number); fields in ``skip`` are the caller's."""
    fields: dict[str, Any] = {}
    for key, hint in get_type_hints(schema).items():
        if key in skip:
            continue
        kinds = tuple(kind for kind in get_args(hint) or (hint,) if kind is not type(None))
        kinds += (int,) if float in kinds else ()  # JSON has one kind of number
        value = document.get(key)
        if isinstance(value, bool) and bool not in kinds:
            value = None
        fields[key] = value if isinstance(value, kinds) else None
    return fields


def _progress_message(state: dict[str, Any]) -> str:
    running = [stage["id"] for stage in state["stages"] if stage["status"] == "running"]
    where = f": running {', '.join(running)}" if running else ""
    return f"run {state['run_id']} {state['status']}{where}"


async def _respond(body: Callable[[], Awaitable[dict[str, Any]]]) -> CallToolResult:
    """Run a tool body; its document is the structured result, an error becomes a tool error."""
    try:
        document = await body()
    except (OrchestratorError, CliError) as error:
        return _error(error.message, error.exit_code)
    return CallToolResult(
        content=[TextContent(type="text", text=json_text(document, pretty=False))],
        structured_content=document,
    )


def _error(message: str, exit_code: int) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"error (exit {exit_code}): {message}")],
        structured_content={"error": message, "exit_code": exit_code},
        is_error=True,
    )


def _checked_id(value: str, kind: str) -> str:
    """``value`` when it follows the id rule; a huge value is shown cut in the message."""
    validate_id(_cut(value), kind)
    return value


def _run_id(value: str) -> str:
    """``value`` when it has the form of a run reference (`runref`), before any command runs."""
    check_reference(_cut(value))
    return value


def _cut(value: str) -> str:
    """A huge argument as a message shows it (it fails the check either way)."""
    return value if len(value) <= 200 else value[:40] + "…"


def _pipeline_task(pipeline: str | None, task: str | None) -> list[str]:
    arguments = [] if pipeline is None else [_checked_id(pipeline, "pipeline")]
    return arguments if task is None else [*arguments, "--task", _checked_id(task, "task")]


def _text(value: str, name: str) -> str:
    """Free text passed on a command line: one line, no NUL, at most `MAX_TEXT` characters."""
    if len(value) > MAX_TEXT:
        raise UsageError(f"{name} is {len(value)} characters long; give at most {MAX_TEXT}")
    if not value.strip() or any(char in value for char in "\0\n\r"):
        raise UsageError(f"{name} must be one non-empty line of text without NUL characters")
    return value


def _one_line(error: ValidationError) -> str:
    """Pydantic's multi-line report as one line: ``argument 'x': message; ...``."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        parts.append(f"argument {where!r}: {item['msg']}")
    return "; ".join(parts)
