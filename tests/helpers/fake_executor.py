"""An in-process executor for engine tests: nothing is spawned, each stage "runs" at once."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from codex_orchestrator.commands.common import load, run_context
from codex_orchestrator.engine.context import RunContext
from codex_orchestrator.executors.base import Cancellation, Handle, StageOutcome, StageRequest
from codex_orchestrator.pipelines.config import Config
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter
from conftest import Repo


class FakeExecutor:
    """A stage "prints" ``ran <id>`` and exits with the number after ``exit`` in its command,
    or with the next of ``exits[<id>]`` when scripted; reaped handles are kept in ``reaped``."""

    name = "fake"

    def __init__(self, exits: dict[str, list[int]] | None = None) -> None:
        self.options: dict[str, str] = {}
        self.exits = exits or {}
        self.ran: list[str] = []
        self.reaped: list[dict[str, Any]] = []
        self.closed = 0

    def run(
        self,
        request: StageRequest,
        cancellation: Cancellation,
        on_handle: Callable[[Handle], None],
    ) -> StageOutcome:
        on_handle({"kind": "fake", "host": "fake-host", "ticket": len(self.ran)})
        self.ran.append(request.stage_id)
        output = f"ran {request.stage_id}\n".encode()
        request.stdout_path.write_bytes(output)
        request.stderr_path.write_bytes(b"")
        words = request.command.split()
        code = int(words[words.index("exit") + 1]) if "exit" in words else 0
        scripted = self.exits.get(request.stage_id)
        if scripted:
            code = scripted.pop(0)
        return StageOutcome(
            exit_code=code,
            started_at=time.time(),
            duration_seconds=0.0,
            timed_out=False,
            cancelled=False,
            killed=False,
            lost=False,
            stdout_tail=output,
            stderr_tail=b"",
            stdout_bytes=len(output),
            stderr_bytes=0,
            host="fake-host",
        )

    def reap(self, handle: Handle, grace_seconds: float) -> bool:
        self.reaped.append(dict(handle))
        return False

    def close(self) -> None:
        self.closed += 1


def fake_context(repo: Repo, executor: FakeExecutor) -> tuple[RunContext, Config]:
    """The run context of ``repo``'s config, running stages on ``executor``."""
    workspace = Workspace.from_env({"CODEX_ORCHESTRATOR_ROOT": str(repo.root)})
    config, settings = load(workspace)
    flags = argparse.Namespace(
        executor=None, scheduler=None, detach=False, quiet=False, no_cache=False
    )
    pipeline = config.resolve_pipeline(None)
    ctx = run_context(flags, workspace, config, settings, "default", pipeline, Reporter("json"))
    return ctx._replace(executor=executor), config
