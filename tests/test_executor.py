"""The executor boundary: a second executor drives a pipeline with nothing else changed, and
the local executor runs stages from several threads at once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from codex_orchestrator.commands.common import load, run_context
from codex_orchestrator.engine.lifecycle import create_run, execute
from codex_orchestrator.engine.recovery import prepare_resume
from codex_orchestrator.executors.base import Cancellation, Handle, StageOutcome, StageRequest
from codex_orchestrator.executors.local import LocalExecutor
from codex_orchestrator.executors.process import group_alive
from codex_orchestrator.records.manifest import ManifestStore, load_manifest
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter
from conftest import Repo


class FakeExecutor:
    """An in-process executor: a stage "prints" its command and exits with the number after
    ``exit`` in it; nothing is spawned."""

    name = "fake"

    def __init__(self) -> None:
        self.options: dict[str, str] = {}
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


def _context(repo: Repo, executor: FakeExecutor) -> Any:
    workspace = Workspace.from_env({"CODEX_ORCHESTRATOR_ROOT": str(repo.root)})
    config, settings = load(workspace)
    ctx = run_context(workspace, config, settings, "default", Reporter("json"))
    return ctx._replace(executor=executor), config


def test_a_second_executor_runs_a_pipeline_and_is_asked_to_reap_on_resume(repo: Repo) -> None:
    repo.pipeline(
        {"id": "one", "command": "build"},
        {"id": "two", "command": "check; exit 3"},
        {"id": "three", "command": "never reached"},
    )
    executor = FakeExecutor()
    ctx, config = _context(repo, executor)
    pipeline = config.resolve_pipeline(None)
    store = create_run(ctx, pipeline, None, None)
    result = execute(ctx, store, pipeline)

    assert (result.status, result.status_detail, result.exit_code) == (
        "failed",
        "stage:two:failed",
        1,
    )
    assert executor.ran == ["one", "two"] and executor.closed == 1
    manifest = load_manifest(store.path)
    assert manifest["executor"] == "fake"
    one, two, three = manifest["commands"]
    assert one["status"] == "succeeded" and one["summary"] == "ran one"
    assert one["handle"] == {"kind": "fake", "host": "fake-host", "ticket": 0}
    assert one["host"] == "fake-host" and one["ticket"] == 0
    assert two["status"] == "failed" and two["exit_code"] == 3 and two["error_file"]
    assert three["status"] == "pending" and three.get("handle") is None

    repo.pipeline(
        {"id": "one", "command": "build"},
        {"id": "two", "command": "check"},
        {"id": "three", "command": "finish"},
    )
    ctx, config = _context(repo, executor)
    store = ManifestStore(store.run_dir, load_manifest(store.path))
    prepare_resume(ctx, store, config.resolve_pipeline(None), "tester", "fixed")
    assert [handle["ticket"] for handle in executor.reaped] == [0, 1]
    resumed = execute(ctx, store, config.resolve_pipeline(None))
    assert resumed.status == "succeeded" and executor.ran[2:] == ["two", "three"]
    final = json.loads(store.path.read_text())
    assert [event["outcome"] for event in final["resume_events"]] == ["succeeded"]


def _request(tmp_path: Path, name: str, command: str, timeout: float | None = None) -> StageRequest:
    return StageRequest(
        stage_id=name,
        command=command,
        cwd=tmp_path,
        env=dict(os.environ),
        stdout_path=tmp_path / f"{name}.out",
        stderr_path=tmp_path / f"{name}.err",
        timeout_seconds=timeout,
    )


def _run_in_threads(
    executor: LocalExecutor, cancellation: Cancellation, requests: list[StageRequest]
) -> tuple[dict[str, StageOutcome], dict[str, Mapping[str, Any]]]:
    outcomes: dict[str, StageOutcome] = {}
    handles: dict[str, Mapping[str, Any]] = {}

    def one(request: StageRequest) -> None:
        outcomes[request.stage_id] = executor.run(
            request, cancellation, lambda handle: handles.__setitem__(request.stage_id, handle)
        )

    threads = [threading.Thread(target=one, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    return outcomes, handles


def test_local_executor_runs_stages_from_several_threads(tmp_path: Path) -> None:
    executor = LocalExecutor(grace_seconds=1)
    cancellation = Cancellation(grace_seconds=1)
    requests = [_request(tmp_path, f"s{i}", f"sleep 0.3; echo out-{i}; exit {i}") for i in range(4)]
    started = time.monotonic()
    outcomes, handles = _run_in_threads(executor, cancellation, requests)
    assert time.monotonic() - started < 1.2 * 4  # they overlapped rather than queued
    for i in range(4):
        outcome = outcomes[f"s{i}"]
        assert outcome.exit_code == i and outcome.stdout_tail == f"out-{i}\n".encode()
        assert handles[f"s{i}"]["kind"] == "local" and handles[f"s{i}"]["pgid"] > 1
    executor.close()
    cancellation.close()


def test_cancellation_from_another_thread_ends_every_running_stage_at_once(
    tmp_path: Path,
) -> None:
    executor = LocalExecutor(grace_seconds=5)
    cancellation = Cancellation(grace_seconds=5)
    requests = [_request(tmp_path, f"s{i}", "sleep 300") for i in range(3)]
    timer = threading.Timer(0.5, cancellation.request, args=(signal.SIGTERM,))
    timer.start()
    started = time.monotonic()
    try:
        outcomes, handles = _run_in_threads(executor, cancellation, requests)
        elapsed = time.monotonic() - started
        assert elapsed < 4, elapsed  # `sleep` dies on SIGTERM: no grace period spent
        assert all(outcome.cancelled and not outcome.timed_out for outcome in outcomes.values())
        assert all(outcome.exit_code == 128 + signal.SIGTERM for outcome in outcomes.values())
        assert not [handle for handle in handles.values() if group_alive(handle["pgid"])]
    finally:
        timer.cancel()
        executor.close()  # ends every group it started that is still alive
        cancellation.close()
