"""Running a pipeline: create the run, run its stages, leave honest records.

The flow is `create_run` (run directory, resume token, first manifest) then `execute` (stages,
heartbeat, teardown, final records). `resume` re-enters `execute` with an existing manifest.
Which stage runs when (in order, or as a graph) is the `StageLoop`'s business; `_Stages` says
what starting, finishing and skipping a stage means for the records.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.cache.store import Hit
from codex_orchestrator.engine.cache_step import RunCache
from codex_orchestrator.engine.heartbeat import Heartbeat
from codex_orchestrator.engine.parallel import PrefixedEcho, retry_delay
from codex_orchestrator.engine.stage_loop import (
    Ended,
    Finish,
    LoopState,
    Post,
    RetryIn,
    StageLoop,
    Work,
)
from codex_orchestrator.errors import EXIT_USAGE, OrchestratorError
from codex_orchestrator.executors.base import (
    RUN_ID_ENV,
    Cancellation,
    Executor,
    Handle,
    StageOutcome,
    StageRequest,
)
from codex_orchestrator.persistence.finished_run import record_finished_run
from codex_orchestrator.pipelines.config import CommandStage, Config, Pipeline, SubpipelineStage
from codex_orchestrator.pipelines.graph import (
    NEEDS_FAILED,
    is_graph,
    needs_of,
    resolve_max_parallel,
)
from codex_orchestrator.records.cache_field import CACHE_FIELD
from codex_orchestrator.records.cancel_request import watching
from codex_orchestrator.records.driver import DriverLock, driver_identity
from codex_orchestrator.records.errorfile import build_error_file
from codex_orchestrator.records.events import EventLog, read_events
from codex_orchestrator.records.manifest import (
    EVENTS_NAME,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    RUNNER_NAME,
    ManifestStore,
    command_entry,
    load_manifest,
    write_resume_token,
)
from codex_orchestrator.records.stage_logs import log_stem
from codex_orchestrator.records.statuses import (
    DONE_STAGE_STATUSES,
    DRIVER_LOST_DETAIL,
    TERMINAL_RUN_STATUSES,
    RunStatus,
    StageFailure,
    StageStatus,
    signal_detail,
    signal_name,
    stage_detail,
)
from codex_orchestrator.records.summaries import stage_summary
from codex_orchestrator.records.workspace import Settings, Workspace
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.console import note
from codex_orchestrator.util.ids import new_run_id
from codex_orchestrator.util.jsonio import atomic_write_bytes
from codex_orchestrator.util.safefs import new_directory, real_directory, remove_tree

#: How often the live output echo (a terminal on stderr) copies new log bytes.
ECHO_INTERVAL_SECONDS = 0.1


class RunContext(NamedTuple):
    """What every run of one invocation shares."""

    workspace: Workspace
    config: Config
    settings: Settings
    task_id: str
    task_slug: str
    cancellation: Cancellation
    executor: Executor
    on_output: Callable[[Path, Path], Callable[[], None]] | None = None
    #: False (``--no-cache``): stages with ``cache`` run; their clean successes are stored.
    cache_reads: bool = True


class ActiveRun:
    """A run being executed by this process."""

    def __init__(self, store: ManifestStore, pipeline: Pipeline, events: EventLog) -> None:
        self.store = store
        self.pipeline = pipeline
        self.events = events

    @property
    def run_id(self) -> str:
        """The run id."""
        return str(self.store.data["run_id"])

    @property
    def run_dir(self) -> Path:
        """The run directory."""
        return self.store.run_dir


class RunResult(NamedTuple):
    """How a run ended, for the command that started it."""

    run_id: str
    status: str
    status_detail: str | None
    exit_code: int
    run_dir: Path


def hash_token(token: str) -> str:
    """The manifest's form of a resume token: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def _make_run_dir(workspace: Workspace, task_id: str) -> tuple[str, Path]:
    """Create a fresh run directory. A runs root that cannot hold the task's ``cli`` directory
    is bad input (exit 2); failing to create the run directory itself (read-only or full runs
    root) is an environment fault that propagates to the command line's handler (exit 1)."""
    cli_dir = workspace.cli_dir(task_id)
    try:
        real_directory(cli_dir)
    except OSError as error:
        raise OrchestratorError(
            f"cannot create {workspace.display(cli_dir)} ({error.strerror}); make the runs root "
            "(CODEX_ORCHESTRATOR_RUNS_DIR, default .runs) a writable directory",
            exit_code=EXIT_USAGE,
        ) from None
    while True:
        run_id = new_run_id()
        run_dir = cli_dir / run_id
        try:
            new_directory(run_dir)
        except FileExistsError:
            continue
        return run_id, run_dir


def create_run(
    ctx: RunContext, pipeline: Pipeline, parent_run_id: str | None, approval_policy: str | None
) -> ManifestStore:
    """Create the run directory, its resume token and its first (queued) manifest.

    A failure before the manifest exists leaves no run directory behind: a directory without
    a manifest would be a run nobody can see, resume or clean.
    """
    run_id, run_dir = _make_run_dir(ctx.workspace, ctx.task_id)
    driver = DriverLock(run_dir)
    try:
        driver.acquire()
        new_directory(run_dir / "commands")
        new_directory(run_dir / "errors")
        token = os.urandom(32).hex()
        write_resume_token(run_dir, token)
        store = ManifestStore(
            run_dir,
            _first_manifest(ctx, pipeline, run_id, run_dir, token, parent_run_id, approval_policy),
        )
        store.persist()
    except OSError:
        driver.release()
        _remove_unborn_run(run_dir)
        raise
    store.driver = driver
    return store


def _remove_unborn_run(run_dir: Path) -> None:
    """Remove a run directory this process just created and that has no manifest yet."""
    with suppress(OSError):
        remove_tree(run_dir)


def _first_manifest(
    ctx: RunContext,
    pipeline: Pipeline,
    run_id: str,
    run_dir: Path,
    token: str,
    parent_run_id: str | None,
    approval_policy: str | None,
) -> dict[str, Any]:
    display = ctx.workspace.display
    now = iso_utc()
    return {
        "version": MANIFEST_VERSION,
        "task_id": ctx.task_id,
        "task_slug": ctx.task_slug,
        "run_id": run_id,
        "parent_run_id": parent_run_id,
        "pipeline_id": pipeline.id,
        "pipeline_title": pipeline.title,
        "pipeline_source": pipeline.source,
        "runner": RUNNER_NAME,
        "executor": ctx.executor.name,
        "executor_options": dict(ctx.executor.options),
        "approval_policy": approval_policy,
        "status": RunStatus.QUEUED,
        "status_detail": None,
        "exit_code": None,
        "started_at": now,
        "completed_at": None,
        "updated_at": now,
        "heartbeat_at": now,
        "heartbeat_interval_seconds": ctx.settings.heartbeat_interval_seconds,
        "heartbeat_stale_after_seconds": ctx.settings.heartbeat_stale_after_seconds,
        "artifact_root": display(run_dir),
        "log_path": display(run_dir / EVENTS_NAME),
        "summary": None,
        "metrics_recorded": False,
        "resume_token": hash_token(token),
        "resume_events": [],
        "approvals": [],
        "commands": _command_entries(pipeline),
        "child_runs": [],
        "run_summary_path": None,
    }


def _command_entries(pipeline: Pipeline) -> list[dict[str, Any]]:
    """The fresh ``commands[]`` of a run, in config order; each names what it ``needs``."""
    needs = needs_of(pipeline.stages)
    entries = []
    for index, stage in enumerate(pipeline.stages, start=1):
        command = stage.command if isinstance(stage, CommandStage) else None
        entry = command_entry(index, stage.id, stage.title, stage.kind, command)
        entry["needs"] = list(needs[stage.id])
        entries.append(entry)
    return entries


def execute(ctx: RunContext, store: ManifestStore, pipeline: Pipeline) -> RunResult:
    """Run every stage that has not succeeded or been skipped, then write the final records.

    The executor is closed before the final records are written, so whatever the stages left
    running (helpers for later stages) has ended by the time the run is recorded as over.
    """
    return _execute(ctx, store, pipeline, close_executor=True)


def _execute(
    ctx: RunContext, store: ManifestStore, pipeline: Pipeline, *, close_executor: bool
) -> RunResult:
    run = ActiveRun(store=store, pipeline=pipeline, events=EventLog(store.run_dir / EVENTS_NAME))
    store.update(
        status=RunStatus.IN_PROGRESS,
        executor=ctx.executor.name,
        executor_options=dict(ctx.executor.options),
        **driver_identity(),
    )
    heartbeat = Heartbeat(
        store,
        ctx.settings.heartbeat_interval_seconds,
        ctx.settings.manifest_throttle_seconds,
        on_failure=lambda error: _heartbeat_failed(run, error),
    )
    run.events.emit("run_started", run_id=run.run_id, pipeline_id=pipeline.id, pid=os.getpid())
    try:  # from here on, whatever fails, the run ends with a terminal manifest
        store.persist()
        heartbeat.start()
        # a `cancel` of this run (and of no other) requests its cancellation
        with watching(run.run_dir, ctx.cancellation, store.data):
            outcome = _run_stages(ctx, run)
        store.flush()  # a run directory that can no longer be written fails the run here
    except Exception as error:  # an unexpected fault still ends with an honest record
        outcome = _internal_failure(run, error)
    finally:
        heartbeat.stop()
        if close_executor:
            ctx.executor.close()
    run.events.emit(
        "heartbeat_stats",
        ticks=heartbeat.ticks,
        manifest_writes=heartbeat.manifest_writes,
        manifest_writes_total=store.writes,
        failures=heartbeat.failures,
    )
    return _finish(ctx, run, *outcome)


def _internal_failure(run: ActiveRun, error: Exception) -> tuple[RunStatus, str | None]:
    """Fail the run (and its running stages) after an unexpected error in the orchestrator."""
    message = f"orchestrator error: {type(error).__name__}: {error}"
    note(f"error: run {run.run_id}: {message}")
    run.events.emit("internal_error", error=message)
    detail = f"error:{type(error).__name__}"
    with run.store.lock:
        for entry in run.store.data["commands"]:
            if entry["status"] == StageStatus.RUNNING:
                entry.update(status=StageStatus.FAILED, summary=message[:240])
                if detail.startswith("error:"):
                    detail = stage_detail(entry["id"])
    return RunStatus.FAILED, detail


def _heartbeat_failed(run: ActiveRun, error: BaseException) -> None:
    message = f"warning: heartbeat write failed for run {run.run_id}: {error}; retrying next tick"
    note(message)
    run.events.emit("heartbeat_failed", run_id=run.run_id, error=str(error))


def _run_stages(ctx: RunContext, run: ActiveRun) -> tuple[RunStatus, str | None]:
    """Run every stage not yet done, in order or as a graph; return (status, status_detail)."""
    pipeline = run.pipeline
    done = [
        entry["id"]
        for entry in run.store.data["commands"]
        if entry["status"] in DONE_STAGE_STATUSES
    ]
    loop = StageLoop(
        pipeline.stages,
        _Stages(ctx, run),
        ctx.cancellation,
        max_parallel=resolve_max_parallel(pipeline.max_parallel, ctx.settings.max_parallel),
        fail_fast=pipeline.fail_fast,
        done=done,
    )
    failure = loop.run()
    if ctx.cancellation.requested:
        return RunStatus.CANCELLED, signal_detail(ctx.cancellation.signum or signal.SIGTERM)
    first_failed = loop.scheduler.first_failure
    if first_failed is not None:
        return RunStatus.FAILED, failure or stage_detail(first_failed)
    return RunStatus.SUCCEEDED, None


class _Stages:
    """The runner's side of the `StageLoop`: what starting, finishing and skipping a stage
    means for the run's records. Every method runs in the main flow; the `Work` it returns is
    what runs in a worker thread (only the executor, no records)."""

    def __init__(self, ctx: RunContext, run: ActiveRun) -> None:
        self.ctx = ctx
        self.run = run
        self.prefix_output = is_graph(run.pipeline.stages)
        self.first_attempt: dict[int, int] = {}
        self.last_outcome: dict[int, StageOutcome] = {}
        self.logs: dict[int, tuple[Path, Path]] = {}
        self.cache = RunCache(
            ctx.workspace,
            ctx.config.settings,
            ctx.settings,
            run.pipeline,
            run.run_id,
            ctx.task_id,
            reads=ctx.cache_reads,
            done=[e for e in run.store.data["commands"] if e["status"] in DONE_STAGE_STATUSES],
        )

    def start(self, index: int, cancellation: Cancellation, post: Post) -> Ended | Work:
        """Begin stage ``index`` (or its next attempt)."""
        stage = self.run.pipeline.stages[index - 1]
        if isinstance(stage, SubpipelineStage):
            return self._start_child(index, stage, cancellation)
        return self._start_command(index, stage, cancellation, post)

    def _start_command(
        self, index: int, stage: CommandStage, cancellation: Cancellation, post: Post
    ) -> Ended | Work:
        ctx, run = self.ctx, self.run
        unavailable = stage.unavailable_reason()
        if unavailable is not None:
            self.cache.skipped(stage.id)
            _stage_begin(run, index)
            why = "not-applicable" if stage.skip_reason else "tool-missing"
            _stage_end(run, index, StageStatus.SKIPPED, summary=unavailable, skip_reason=why)
            return Ended(StageStatus.SKIPPED)
        run_env = _stage_env(ctx, run, stage)
        environ = {**os.environ, **run_env}
        hit = self.cache.lookup(index, stage, environ)
        if hit is not None:
            replayed = self._replay(index, stage, hit)
            if replayed is not None:
                return replayed
        attempt, stdout_path, stderr_path = _attempt_logs(run, index, stage.id)
        self.first_attempt.setdefault(index, attempt)
        self.logs[index] = (stdout_path, stderr_path)
        display = ctx.workspace.display
        cache = self.cache.field(index)
        _stage_begin(
            run,
            index,
            persist=False,
            attempt=attempt,
            log_path=display(stdout_path),
            stderr_log_path=display(stderr_path),
            **_cleared_handle(run.store.command(index)),
            **({CACHE_FIELD: cache} if cache is not None else {}),
        )
        request = StageRequest(
            stage_id=stage.id,
            command=stage.command,
            cwd=ctx.workspace.root / (stage.cwd or "."),
            env=environ,
            run_env=run_env,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            timeout_seconds=stage.timeout_seconds,
            resources=stage.resources or None,
        )
        prefix = stage.id if self.prefix_output else None

        def on_handle(handle: Handle) -> None:
            post(partial(_stage_handle, run, index, handle))

        def work() -> Finish:
            try:
                with _echoing(ctx, stdout_path, stderr_path, prefix):
                    outcome = ctx.executor.run(request, cancellation, on_handle)
            except (OSError, ValueError) as error:
                failure = error
            else:
                return partial(self._command_finished, index, stage, attempt, outcome)
            return partial(self._spawn_failed, index, stage, failure)

        return work

    def _replay(self, index: int, stage: CommandStage, hit: Hit) -> Ended | None:
        """Serve a cache hit: the original logs and outputs, no process; None when the entry
        cannot be served after all (the stage then runs)."""
        run = self.run
        began = time.monotonic()
        _, stdout_path, stderr_path = _attempt_logs(run, index, stage.id)
        served = self.cache.replay(hit, stdout_path, stderr_path)
        if isinstance(served, str):
            self.cache.missed(index, served)
            return None
        display = self.ctx.workspace.display
        _stage_begin(
            run,
            index,
            persist=False,
            log_path=display(stdout_path),
            stderr_log_path=display(stderr_path),
            **_cleared_handle(run.store.command(index)),
        )
        with _echoing(self.ctx, stdout_path, stderr_path, stage.id if self.prefix_output else None):
            pass  # the replayed output reaches the terminal as a run's would
        _stage_end(
            run,
            index,
            StageStatus.SUCCEEDED,
            summary=hit.entry.summary,
            exit_code=0,
            duration_seconds=round(time.monotonic() - began, 3),
            stdout_bytes=_size(stdout_path),
            stderr_bytes=_size(stderr_path),
            timed_out=False,
            pid=None,
            pgid=None,
            **{CACHE_FIELD: served},
        )
        return Ended(StageStatus.SUCCEEDED)

    def _spawn_failed(
        self, index: int, stage: CommandStage, error: OSError | ValueError, _: LoopState
    ) -> Ended:
        return Ended(*_stage_spawn_failed(self.ctx, self.run, index, stage, error))

    def _command_finished(
        self, index: int, stage: CommandStage, attempt: int, outcome: StageOutcome, state: LoopState
    ) -> Ended | RetryIn:
        """Record an attempt: retry it after the backoff, or end the stage."""
        run = self.run
        if stage.retries:  # only stages that may retry carry a history (manifests stay small)
            entry = run.store.command(index)
            history = [*entry.get("attempt_history", []), _attempt_record(attempt, entry, outcome)]
            run.store.update_command(index, attempt_history=history)
        self.last_outcome[index] = outcome
        failed = outcome.exit_code != 0 or outcome.timed_out or outcome.lost
        last = self.first_attempt[index] + stage.retries
        retry = failed and not outcome.cancelled and not outcome.may_still_run
        if retry and not state.stopping and attempt < last:
            delay = retry_delay(stage.retry_delay_seconds, attempt - self.first_attempt[index] + 1)
            why = "timed out" if outcome.timed_out else f"exit {outcome.exit_code}"
            summary = f"attempt {attempt} of {last} failed ({why}); retrying in {delay:g}s"
            run.store.update_command(index, summary=summary, exit_code=outcome.exit_code)
            run.store.persist_transition()
            run.events.emit(
                "stage_retry",
                index=index,
                stage_id=stage.id,
                attempt=attempt,
                exit_code=outcome.exit_code,
                delay_seconds=delay,
            )
            return RetryIn(delay)
        attempt_note = None
        if stage.retries and not outcome.cancelled:
            attempt_note = f"{'failed' if failed else 'succeeded'} on attempt {attempt} of {last}"
        ended = Ended(
            *_stage_outcome(
                self.ctx,
                run,
                index,
                stage,
                outcome,
                stop_reason=state.stop_reason,
                attempt_note=attempt_note,
            )
        )
        if ended.status == StageStatus.SUCCEEDED:  # a clean success: exit 0, nothing lost
            cache = self.cache.stored(index, stage, run.store.command(index), *self.logs[index])
            if cache is not None:  # the next transition or the final record writes it
                run.store.update_command(index, **{CACHE_FIELD: cache})
        return ended

    def interrupted(self, index: int, reason: str) -> Ended:
        """A stage waiting to retry when the run stops: its last attempt is its end."""
        stage = self.run.pipeline.stages[index - 1]
        assert isinstance(stage, CommandStage)  # only command stages retry
        attempts = int(self.run.store.command(index).get("attempts") or 0)
        attempt_note = f"{reason} before attempt {attempts + 1}"
        outcome = self.last_outcome[index]
        return Ended(
            *_stage_outcome(self.ctx, self.run, index, stage, outcome, attempt_note=attempt_note)
        )

    def skip_needs_failed(self, skips: Sequence[tuple[int, str]]) -> None:
        """Stages that will not run because a stage they need (maybe transitively) failed."""
        run = self.run
        now = iso_utc()
        for index, failed in skips:
            run.store.update_command(
                index,
                status=StageStatus.SKIPPED,
                skip_reason=NEEDS_FAILED,
                summary=f"skipped: {failed} failed",
                completed_at=now,
            )
        run.store.persist_transition()
        for index, failed in skips:
            run.events.emit(
                "stage_finished",
                index=index,
                stage_id=run.store.command(index)["id"],
                status=StageStatus.SKIPPED,
                skip_reason=NEEDS_FAILED,
                failed_stage=failed,
            )

    def _start_child(self, index: int, stage: SubpipelineStage, cancellation: Cancellation) -> Work:
        ctx, run = self.ctx, self.run
        child_pipeline = ctx.config.pipelines[stage.pipeline]
        child = create_run(ctx, child_pipeline, run.run_id, run.store.data.get("approval_policy"))
        child_id = str(child.data["run_id"])
        link = {
            "run_id": child_id,
            "pipeline_id": child_pipeline.id,
            "stage_id": stage.id,
            "status": RunStatus.IN_PROGRESS,
            "manifest": ctx.workspace.display(child.path),
        }
        run.store.append("child_runs", link)
        _stage_begin(
            run,
            index,
            persist=False,
            sub_run_id=child_id,
            log_path=ctx.workspace.display(child.path),
        )
        run.store.persist()  # at once: resume settles the child runs the manifest links
        # The child follows this run's cancellation (a signal, a failFast teardown), and has
        # one of its own: a `cancel` of the child run ends it and nothing else.
        own = cancellation.dependent()
        child_ctx = ctx._replace(cancellation=own)

        def work() -> Finish:
            try:
                result = _execute(child_ctx, child, child_pipeline, close_executor=False)
            finally:
                own.close()
            return partial(self._child_finished, index, stage, link, result)

        return work

    def _child_finished(
        self,
        index: int,
        stage: SubpipelineStage,
        link: dict[str, Any],
        result: RunResult,
        state: LoopState,
    ) -> Ended:
        run = self.run
        with run.store.lock:
            link["status"] = result.status
        summary = f"child run {result.run_id} {result.status}"
        if result.status == RunStatus.SUCCEEDED:
            _stage_end(run, index, StageStatus.SUCCEEDED, summary=summary, exit_code=0)
            return Ended(StageStatus.SUCCEEDED)
        # A child cancelled while this run goes on was cancelled alone (`cancel CHILD`): for
        # this run it is a child run that did not succeed, as if it had failed.
        with_this_run = state.stopping or self.ctx.cancellation.requested
        torn_down = result.status == RunStatus.CANCELLED and with_this_run
        if stage.optional and not torn_down:
            _stage_end(
                run,
                index,
                StageStatus.SKIPPED,
                summary=f"optional {summary}",
                exit_code=result.exit_code,
                skip_reason="optional-failed",
            )
            return Ended(StageStatus.SKIPPED)
        _stage_end(run, index, StageStatus.FAILED, summary=summary, exit_code=result.exit_code)
        if torn_down:
            return Ended(StageStatus.FAILED, result.status_detail)
        return Ended(StageStatus.FAILED, stage_detail(stage.id))


def _attempt_record(attempt: int, entry: dict[str, Any], outcome: StageOutcome) -> dict[str, Any]:
    """One ``attempt_history`` item: how attempt number ``attempt`` went, and its logs."""
    return {
        "attempt": attempt,
        "exit_code": outcome.exit_code,
        "timed_out": outcome.timed_out,
        "cancelled": outcome.cancelled,
        "started_at": entry.get("started_at"),
        "completed_at": iso_utc(),
        "duration_seconds": round(outcome.duration_seconds, 3),
        "log_path": entry.get("log_path"),
        "stderr_log_path": entry.get("stderr_log_path"),
    }


def _stage_begin(
    run: ActiveRun,
    index: int,
    *,
    persist: bool = True,
    attempt: int | None = None,
    **fields: Any,
) -> None:
    entry = run.store.command(index)
    attempts = attempt if attempt is not None else int(entry.get("attempts") or 0) + 1
    run.store.update_command(
        index,
        status=StageStatus.RUNNING,
        started_at=iso_utc(),
        completed_at=None,
        exit_code=None,
        summary=None,
        error_file=None,
        attempts=attempts,
        **fields,
    )
    if persist:
        run.store.persist_transition()
    run.events.emit("stage_started", index=index, stage_id=entry["id"], attempt=attempts)


def _stage_end(run: ActiveRun, index: int, status: StageStatus, **fields: Any) -> None:
    run.store.update_command(index, status=status, completed_at=iso_utc(), **fields)
    run.store.persist_transition()
    entry = run.store.command(index)
    run.events.emit(
        "stage_finished",
        index=index,
        stage_id=entry["id"],
        status=status,
        exit_code=entry.get("exit_code"),
        summary=entry.get("summary"),
    )


def _stage_env(ctx: RunContext, run: ActiveRun, stage: CommandStage) -> dict[str, str]:
    """The variables the run sets for a stage: its own, then the stage's configured ``env``."""
    return {
        "MCP_RUNNER_TASK_ID": ctx.task_id,
        "CODEX_ORCHESTRATOR_TASK_ID": ctx.task_id,
        RUN_ID_ENV: run.run_id,
        "CODEX_ORCHESTRATOR_PIPELINE_ID": run.pipeline.id,
        "CODEX_ORCHESTRATOR_MANIFEST_PATH": str(run.store.path),
        "CODEX_ORCHESTRATOR_RUN_DIR": str(run.run_dir),
        "CODEX_ORCHESTRATOR_ROOT": str(ctx.workspace.root),
        "CODEX_ORCHESTRATOR_PYTHON": sys.executable,
        **stage.env,
    }


def _log_stem(run: ActiveRun, index: int, stage_id: str) -> str:
    return log_stem(index, stage_id, len(run.pipeline.stages))


def _attempt_logs(run: ActiveRun, index: int, stage_id: str) -> tuple[int, Path, Path]:
    """The next attempt number and its log paths, never those of an earlier attempt.

    The recorded count may lag behind the files (a driver killed between creating the logs
    and recording the attempt), so numbers whose logs exist are skipped: an attempt's logs are
    never truncated by another attempt.
    """
    attempt = int(run.store.command(index).get("attempts") or 0) + 1
    while True:
        stem = _log_stem(run, index, stage_id) + (f".attempt-{attempt}" if attempt > 1 else "")
        stdout_path = run.run_dir / "commands" / f"{stem}.stdout.log"
        stderr_path = run.run_dir / "commands" / f"{stem}.stderr.log"
        if not (os.path.lexists(stdout_path) or os.path.lexists(stderr_path)):
            return attempt, stdout_path, stderr_path
        attempt += 1


#: Stage-entry fields a handle's fields never overwrite when they are copied onto the entry.
_RESERVED_ENTRY_FIELDS = frozenset(command_entry(0, "", "", "", None)) | {
    "handle",
    "attempts",
    "duration_seconds",
    "stdout_bytes",
    "stderr_bytes",
    "timed_out",
    "stderr_log_path",
}


def _stage_handle(run: ActiveRun, index: int, handle: Handle) -> None:
    """Store the executor's handle; its scalar fields are also copied onto the stage entry
    (for a local stage: ``host``, ``pid``, ``pgid``, ``pid_start_ticks``), where readers of
    earlier records look for them."""
    copied = {
        key: value
        for key, value in handle.items()
        if key != "kind" and key not in _RESERVED_ENTRY_FIELDS and _scalar(value)
    }
    run.store.update_command(index, handle=dict(handle), **copied)
    run.events.emit("stage_handle", index=index, handle=dict(handle))
    run.store.persist_transition()


def _cleared_handle(entry: dict[str, Any]) -> dict[str, Any]:
    """Blank the previous attempt's handle and the fields copied from it."""
    previous = entry.get("handle")
    fields = dict.fromkeys(previous, None) if isinstance(previous, dict) else {}
    fields.pop("kind", None)
    for key in _RESERVED_ENTRY_FIELDS:
        fields.pop(key, None)
    return {**fields, "handle": None}


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


@contextmanager
def _echoing(
    ctx: RunContext, stdout_path: Path, stderr_path: Path, prefix: str | None = None
) -> Iterator[None]:
    """Copy the stage's new output onto the terminal while it runs (when asked to); with a
    ``prefix`` (stages running at once), whole lines, each marked ``[prefix]``."""
    if ctx.on_output is None:
        yield
        return
    last: Callable[[], None]
    if prefix is None:
        echo = last = ctx.on_output(stdout_path, stderr_path)
    else:
        prefixed = PrefixedEcho(prefix, stdout_path, stderr_path)
        echo, last = prefixed, prefixed.finish
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(ECHO_INTERVAL_SECONDS):
            echo()

    thread = threading.Thread(target=loop, name="output-echo", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        last()


def _stage_spawn_failed(
    ctx: RunContext, run: ActiveRun, index: int, stage: CommandStage, error: OSError | ValueError
) -> tuple[StageStatus, str | None]:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    summary = f"could not start the command: {reason} (cwd {stage.cwd or '.'})"
    details = {"exit_code": None, "error": summary}
    error_file = _write_error_file(ctx, run, index, stage, "spawn-failed", details, b"", b"")
    _stage_end(
        run, index, StageStatus.FAILED, summary=summary, exit_code=None, error_file=error_file
    )
    return StageStatus.FAILED, stage_detail(stage.id)


def _stage_outcome(
    ctx: RunContext,
    run: ActiveRun,
    index: int,
    stage: CommandStage,
    outcome: StageOutcome,
    *,
    stop_reason: str | None = None,
    attempt_note: str | None = None,
) -> tuple[StageStatus, str | None]:
    """Record how the stage's last attempt ended. ``stop_reason`` explains a cancellation that
    came from the run itself (failFast), not from a signal; ``attempt_note`` (retries) heads the
    summary."""
    stdout_tail, stdout_size = outcome.stdout_tail, outcome.stdout_bytes
    stderr_tail, stderr_size = outcome.stderr_tail, outcome.stderr_bytes
    exit_code = outcome.exit_code
    summary = stage_summary(stage.summary_hint, stdout_tail, stderr_tail, exit_code)
    fields: dict[str, Any] = {
        "exit_code": exit_code,
        "duration_seconds": round(outcome.duration_seconds, 3),
        "stdout_bytes": stdout_size,
        "stderr_bytes": stderr_size,
        "timed_out": outcome.timed_out,
        "host": outcome.host,
    }
    if attempt_note:
        summary = f"{attempt_note}; {summary}"
    failed = outcome.timed_out or outcome.cancelled or outcome.lost
    if exit_code == 0 and not failed:
        _stage_end(run, index, StageStatus.SUCCEEDED, summary=summary, **fields)
        return StageStatus.SUCCEEDED, None
    if outcome.timed_out:
        summary = f"timed out after {stage.timeout_seconds:g}s; {summary}"
        reason, detail = "command-timeout", stage_detail(stage.id, StageFailure.TIMEOUT)
    elif outcome.cancelled and not ctx.cancellation.requested:
        summary = f"{stop_reason or 'stopped by the run'}; {summary}"
        reason, detail = "command-cancelled", stage_detail(stage.id)
    elif outcome.cancelled:
        signum = ctx.cancellation.signum or signal.SIGTERM
        summary = f"cancelled by {signal_name(signum)}; {summary}"
        reason, detail = "command-cancelled", signal_detail(signum)
    elif outcome.lost:
        summary = f"{outcome.lost_reason or 'the executor lost the stage'}; {summary}"
        failure = outcome.lost_failure
        reason, detail = failure.value, stage_detail(stage.id, failure)
    elif stage.allow_failure:
        reason, detail = "command-allow-failure", None
    else:
        reason, detail = "command-failed", stage_detail(stage.id)
    details = {
        "exit_code": exit_code,
        "timed_out": outcome.timed_out,
        "stdout_truncated": stdout_size > len(stdout_tail),
        "stderr_truncated": stderr_size > len(stderr_tail),
        "stdout_bytes": stdout_size,
        "stderr_bytes": stderr_size,
    }
    error_file = _write_error_file(
        ctx, run, index, stage, reason, details, stdout_tail, stderr_tail
    )
    if reason == "command-allow-failure":
        fields["skip_reason"] = "allowed-failure"
        status = StageStatus.SKIPPED
    else:
        status = StageStatus.FAILED
    _stage_end(run, index, status, summary=summary, error_file=error_file, **fields)
    return status, detail


def _write_error_file(
    ctx: RunContext,
    run: ActiveRun,
    index: int,
    stage: CommandStage,
    reason: str,
    details: dict[str, Any],
    stdout_tail: bytes,
    stderr_tail: bytes,
) -> str:
    header = {
        "run_id": run.run_id,
        "task_id": ctx.task_id,
        "command_index": index,
        "command_id": stage.id,
        "reason": reason,
        "created_at": iso_utc(),
    }
    payload = build_error_file(header, stage.command, details, stdout_tail, stderr_tail)
    path = run.run_dir / "errors" / f"{_log_stem(run, index, stage.id)}.json"
    atomic_write_bytes(path, payload)
    return ctx.workspace.display(path)


def _finish(ctx: RunContext, run: ActiveRun, status: RunStatus, detail: str | None) -> RunResult:
    exit_code = record_finished_run(
        ctx.workspace, ctx.settings, run.store, run.pipeline.id, status, detail
    )
    detail = run.store.data.get("status_detail")  # the records may name a `cancel` request
    if ctx.settings.report:
        from codex_orchestrator.view.report import report_after_run

        report_after_run(run.run_dir)
    run.events.emit("run_finished", status=status, status_detail=detail, exit_code=exit_code)
    run.events.close()
    if run.store.driver is not None:
        run.store.driver.release()
    return RunResult(run.run_id, status, detail, exit_code, run.run_dir)


def prepare_resume(
    ctx: RunContext, store: ManifestStore, pipeline: Pipeline, actor: str, reason: str | None
) -> None:
    """Reset a failed or dead run for another pass and record the resume event.

    What a dead orchestrator's stages left behind is ended first, by the executor that knows
    the stage's handle; stages that did not succeed or get skipped (or were skipped because a
    stage they need failed) go back to ``pending`` with the current config's title and command.
    """
    _reap_stages(ctx, store)
    _settle_child_runs(ctx, store)
    for entry, stage in zip(store.data["commands"], pipeline.stages, strict=True):
        if entry["status"] not in DONE_STAGE_STATUSES or entry.get("skip_reason") == NEEDS_FAILED:
            command = stage.command if isinstance(stage, CommandStage) else None
            entry.update(
                status=StageStatus.PENDING, title=stage.title, command=command, skip_reason=None
            )
    store.update(
        status=RunStatus.QUEUED,
        status_detail=None,
        exit_code=None,
        completed_at=None,
        metrics_recorded=False,
        heartbeat_interval_seconds=ctx.settings.heartbeat_interval_seconds,
        heartbeat_stale_after_seconds=ctx.settings.heartbeat_stale_after_seconds,
    )
    store.append(
        "resume_events",
        {
            "timestamp": iso_utc(),
            "actor": actor,
            "reason": reason,
            "outcome": RunStatus.IN_PROGRESS,
        },
    )
    store.persist(durable=True)


def _reap_stages(ctx: RunContext, store: ManifestStore) -> None:
    """Have the executor end whatever the run's stages left behind (it verifies each handle)."""
    for handle in recorded_handles(store.run_dir, store.data["commands"]):
        ctx.executor.reap(handle, ctx.settings.kill_grace_seconds)


def recorded_handles(run_dir: Path, commands: list[dict[str, Any]]) -> list[Handle]:
    """The latest handle of each stage of a run (also used by ``cancel`` of a dead run).

    Handles come from the manifest and from ``runner.ndjson``, which has every handle at once
    while manifest writes of stage transitions may be deferred.
    """
    handles: dict[object, Handle] = {}
    for entry in commands:
        if isinstance(entry.get("handle"), dict):
            handles[entry["index"]] = entry["handle"]
    for event in read_events(run_dir / EVENTS_NAME, "stage_handle"):
        if isinstance(event.get("handle"), dict):
            handles[event.get("index")] = event["handle"]
    return list(handles.values())


def _settle_child_runs(
    ctx: RunContext,
    store: ManifestStore,
    status: RunStatus = RunStatus.FAILED,
    detail: str | None = DRIVER_LOST_DETAIL,
) -> None:
    """End the child runs a dead driver left unfinished: processes ended, records finished
    (with ``status`` and ``detail``, as their parent).

    A child run is driven by its parent's process, so a dead parent means a dead child; the
    child's own driver lock is taken first all the same, and a child someone drives is left be.
    """
    for link in store.data.get("child_runs", []):
        if not isinstance(link, dict) or link.get("status") in TERMINAL_RUN_STATUSES:
            continue
        child_id = link.get("run_id")
        try:
            child_dir = ctx.workspace.run_dir(ctx.task_id, str(child_id))
        except OrchestratorError:
            continue
        link["status"] = settle_dead_run(ctx, child_dir, status, detail) or link.get("status")


def settle_dead_run(
    ctx: RunContext,
    run_dir: Path,
    status: RunStatus = RunStatus.FAILED,
    detail: str | None = DRIVER_LOST_DETAIL,
) -> str | None:
    """Finish an unfinished run whose driver is dead: end what its stages (and its child runs)
    left behind, then write its final records with ``status`` and ``detail``.

    Returns the run's final status, or None when it could not be settled (someone drives it,
    or its directory or manifest is unusable; one warning line says which). A run that had
    already ended is left as it is.
    """
    run_id = run_dir.name
    driver = DriverLock(run_dir)
    try:
        if not driver.acquire():
            note(f"warning: run {run_id} is still driven by another process; left alone")
            return None
    except OSError as error:
        note(f"warning: run {run_id} not settled ({error.strerror})")
        return None
    try:
        manifest = load_manifest(run_dir / MANIFEST_NAME, ctx.workspace.display(run_dir))
        if manifest["status"] in TERMINAL_RUN_STATUSES:
            return str(manifest["status"])
        store = ManifestStore(run_dir, manifest)
        _reap_stages(ctx, store)
        _settle_child_runs(ctx, store, status, detail)
        record_finished_run(
            ctx.workspace, ctx.settings, store, str(manifest["pipeline_id"]), status, detail
        )
    except OrchestratorError as error:
        note(f"warning: run {run_id} not settled: {error}")
        return None
    finally:
        driver.release()
    note(f"run {run_id} of a dead driver ended as {status} ({detail})")
    return status
