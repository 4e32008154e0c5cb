"""Stage recording: what starting, finishing, retrying and skipping a stage means for a run's
records (manifest entry, events, logs, error files).

`run_stages` hands the run's stages to the `StageLoop`, which decides which stage runs when;
`Stages` is the loop's `StageRunner`. Every recording happens in the main flow; only the
executor's work runs in a worker thread.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from codex_orchestrator.engine.cache_step import RunCache
from codex_orchestrator.engine.context import ActiveRun, Launch, RunContext, RunResult
from codex_orchestrator.engine.echo import echoing
from codex_orchestrator.engine.parallel import retry_delay
from codex_orchestrator.engine.stage_loop import (
    Ended,
    Finish,
    LoopState,
    Post,
    RetryIn,
    StageLoop,
    Work,
)
from codex_orchestrator.executors.base import (
    RUN_ID_ENV,
    Cancellation,
    Handle,
    StageOutcome,
    StageRequest,
)
from codex_orchestrator.pipelines.config import CommandStage, Pipeline, SubpipelineStage
from codex_orchestrator.pipelines.graph import NEEDS_FAILED, resolve_max_parallel
from codex_orchestrator.records.errorfile import build_error_file
from codex_orchestrator.records.manifest import (
    AttemptRecord,
    ChildRunLink,
    ManifestStore,
    StageEnding,
    StageEntry,
)
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.statuses import (
    DONE_STAGE_STATUSES,
    NOTHING_RAN_DETAIL,
    RunStatus,
    SkipReason,
    StageFailure,
    StageStatus,
    nothing_ran,
    signal_detail,
    signal_name,
    stage_detail,
)
from codex_orchestrator.records.summaries import stage_summary
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.jsonio import atomic_write_bytes

if TYPE_CHECKING:  # the cache's machinery is imported by runs with a cached stage only
    from codex_orchestrator.cache.store import Hit

#: The variable holding a run's ``start -- ARGS``, shell-quoted (``shlex.join``).
ARGS_ENV = "CODEX_ORCHESTRATOR_ARGS"


class ChildRuns(NamedTuple):
    """How a subpipeline stage runs its child run: created, then executed, by the lifecycle
    (passed in, so that recording a stage does not import the run lifecycle)."""

    create: Callable[[RunContext, Pipeline, str | None, str | None, Launch], ManifestStore]
    execute: Callable[[RunContext, ManifestStore, Pipeline], RunResult]


class FailureRecord(NamedTuple):
    """What a stage's error file says: why it failed, the details, the output's tails."""

    reason: str
    details: dict[str, Any]
    stdout_tail: bytes
    stderr_tail: bytes


def run_stages(
    ctx: RunContext, run: ActiveRun, children: ChildRuns
) -> tuple[RunStatus, str | None]:
    """Run every stage not yet done, in order or as a graph; return (status, status_detail)."""
    pipeline = run.pipeline
    done = [
        entry["id"]
        for entry in run.store.data["commands"]
        if entry["status"] in DONE_STAGE_STATUSES
    ]
    stages = Stages(ctx, run, children)
    loop = StageLoop(
        pipeline.stages,
        stages,
        ctx.cancellation,
        max_parallel=resolve_max_parallel(pipeline.max_parallel, ctx.settings.max_parallel),
        fail_fast=pipeline.fail_fast,
        done=done,
    )
    with stages.cache:
        failure = loop.run()
    if ctx.cancellation.requested:
        return RunStatus.CANCELLED, signal_detail(ctx.cancellation.signum or signal.SIGTERM)
    first_failed = loop.scheduler.first_failure
    if first_failed is not None:
        return RunStatus.FAILED, failure or stage_detail(first_failed)
    if nothing_ran(run.store.data["commands"]):
        return RunStatus.SKIPPED, NOTHING_RAN_DETAIL
    return RunStatus.SUCCEEDED, None


class Stages:
    """The run's side of the `StageLoop`: what starting, finishing and skipping a stage
    means for the run's records. Every method runs in the main flow; the `Work` it returns is
    what runs in a worker thread (only the executor, no records)."""

    def __init__(self, ctx: RunContext, run: ActiveRun, children: ChildRuns) -> None:
        self.ctx = ctx
        self.run = run
        self.children = children
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
            self.cache.stage_runs()
            return self._start_child(index, stage, cancellation)
        return self._start_command(index, stage, cancellation, post)

    def _start_command(
        self, index: int, stage: CommandStage, cancellation: Cancellation, post: Post
    ) -> Ended | Work:
        ctx, run = self.ctx, self.run
        unavailable = stage.unavailable_reason()
        if unavailable is not None:
            self.cache.skipped(stage.id)
            run.store.begin_stage(index, run.store.attempts(index) + 1)
            _stage_started(run, index, persist=True)
            why = SkipReason.NOT_APPLICABLE if stage.skip_reason else SkipReason.TOOL_MISSING
            _stage_end(run, index, StageStatus.SKIPPED, unavailable, {"skip_reason": why})
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
        run.store.begin_command(index, attempt, display(stdout_path), display(stderr_path))
        run.store.record_cache(index, self.cache.field(index))
        _stage_started(run, index)
        run_env = _stage_env(ctx, run, stage)
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

        def on_handle(handle: Handle) -> None:
            post(partial(_stage_handle, run, index, handle))

        def work() -> Finish:
            try:
                with echoing(ctx.on_output, stage.id, stdout_path, stderr_path):
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
        attempt, stdout_path, stderr_path = _attempt_logs(run, index, stage.id)
        served = self.cache.replay(index, hit, stdout_path, stderr_path)
        if served is None:
            return None
        display = self.ctx.workspace.display
        run.store.begin_command(index, attempt, display(stdout_path), display(stderr_path))
        _stage_started(run, index)
        with echoing(self.ctx.on_output, stage.id, stdout_path, stderr_path):
            pass  # the replayed output reaches the terminal as a run's would
        run.store.record_cache(index, served)
        ending: StageEnding = {
            "exit_code": 0,
            "duration_seconds": round(time.monotonic() - began, 3),
            "stdout_bytes": _size(stdout_path),
            "stderr_bytes": _size(stderr_path),
            "timed_out": False,
        }
        _stage_end(run, index, StageStatus.SUCCEEDED, hit.entry.summary or "", ending)
        return Ended(StageStatus.SUCCEEDED)

    def _spawn_failed(
        self, index: int, stage: CommandStage, error: OSError | ValueError, _: LoopState
    ) -> Ended:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        summary = f"could not start the command: {reason} (cwd {stage.cwd or '.'})"
        failure = FailureRecord("spawn-failed", {"exit_code": None, "error": summary}, b"", b"")
        error_file = self._write_error_file(index, stage, failure)
        ending: StageEnding = {"exit_code": None, "error_file": error_file}
        _stage_end(self.run, index, StageStatus.FAILED, summary, ending)
        return Ended(StageStatus.FAILED, stage_detail(stage.id))

    def _command_finished(
        self, index: int, stage: CommandStage, attempt: int, outcome: StageOutcome, state: LoopState
    ) -> Ended | RetryIn:
        """Record an attempt: retry it after the backoff, or end the stage."""
        run = self.run
        if stage.retries:  # only stages that may retry carry a history (manifests stay small)
            entry = run.store.command(index)
            run.store.add_attempt(index, _attempt_record(attempt, entry, outcome))
        self.last_outcome[index] = outcome
        failed = outcome.exit_code != 0 or outcome.timed_out or outcome.lost
        last = self.first_attempt[index] + stage.retries
        retry = failed and not outcome.cancelled and not outcome.may_still_run
        if retry and not state.stopping and attempt < last:
            delay = retry_delay(stage.retry_delay_seconds, attempt - self.first_attempt[index] + 1)
            why = "timed out" if outcome.timed_out else f"exit {outcome.exit_code}"
            summary = f"attempt {attempt} of {last} failed ({why}); retrying in {delay:g}s"
            run.store.note_retry(index, summary, outcome.exit_code)
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
        ended = self._record_outcome(
            index, stage, outcome, stop_reason=state.stop_reason, attempt_note=attempt_note
        )
        if ended.status == StageStatus.SUCCEEDED:  # a clean success: exit 0, nothing lost
            cache = self.cache.stored(index, stage, run.store.command(index), *self.logs[index])
            # the next transition or the final record writes it
            run.store.record_cache(index, cache)
        return ended

    def interrupted(self, index: int, reason: str) -> Ended:
        """A stage waiting to retry when the run stops: its last attempt is its end."""
        stage = self.run.pipeline.stages[index - 1]
        assert isinstance(stage, CommandStage)  # only command stages retry
        attempt_note = f"{reason} before attempt {self.run.store.attempts(index) + 1}"
        outcome = self.last_outcome[index]
        return self._record_outcome(index, stage, outcome, attempt_note=attempt_note)

    def skip_needs_failed(self, skips: Sequence[tuple[int, str]]) -> None:
        """Stages that will not run because a stage they need (maybe transitively) failed."""
        run = self.run
        now = iso_utc()
        for index, failed in skips:
            run.store.skip_stage(index, NEEDS_FAILED, f"skipped: {failed} failed", now)
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
        approval_policy = run.store.data.get("approval_policy")
        # a child run gets the arguments, and runs every stage of its pipeline
        launch = Launch(args=tuple(recorded_args(run.store.data)))
        child = self.children.create(ctx, child_pipeline, run.run_id, approval_policy, launch)
        child_id = str(child.data["run_id"])
        link: ChildRunLink = {
            "run_id": child_id,
            "pipeline_id": child_pipeline.id,
            "stage_id": stage.id,
            "status": RunStatus.IN_PROGRESS,
            "manifest": ctx.workspace.display(child.path),
        }
        run.store.add_child_run(link)
        run.store.begin_child(index, child_id, ctx.workspace.display(child.path))
        _stage_started(run, index)
        run.store.persist()  # at once: resume settles the child runs the manifest links
        # The child follows this run's cancellation (a signal, a failFast teardown), and has
        # one of its own: a `cancel` of the child run ends it and nothing else.
        own = cancellation.dependent()
        child_ctx = ctx._replace(cancellation=own)

        def work() -> Finish:
            try:
                result = self.children.execute(child_ctx, child, child_pipeline)
            finally:
                own.close()
            return partial(self._child_finished, index, stage, link, result)

        return work

    def _child_finished(
        self,
        index: int,
        stage: SubpipelineStage,
        link: ChildRunLink,
        result: RunResult,
        state: LoopState,
    ) -> Ended:
        run = self.run
        with run.store.lock:
            link["status"] = result.status
        summary = f"child run {result.run_id} {result.status}"
        if result.status == RunStatus.SUCCEEDED:
            _stage_end(run, index, StageStatus.SUCCEEDED, summary, {"exit_code": 0})
            return Ended(StageStatus.SUCCEEDED)
        if result.status == RunStatus.SKIPPED:  # the child ran nothing: nor did this stage
            skipped: StageEnding = {
                "exit_code": result.exit_code,
                "skip_reason": SkipReason.NOT_APPLICABLE,
            }
            _stage_end(run, index, StageStatus.SKIPPED, f"{summary}: no stage ran", skipped)
            return Ended(StageStatus.SKIPPED)
        # A child cancelled while this run goes on was cancelled alone (`cancel CHILD`): for
        # this run it is a child run that did not succeed, as if it had failed.
        with_this_run = state.stopping or self.ctx.cancellation.requested
        torn_down = result.status == RunStatus.CANCELLED and with_this_run
        if stage.optional and not torn_down:
            ending: StageEnding = {
                "exit_code": result.exit_code,
                "skip_reason": SkipReason.OPTIONAL_FAILED,
            }
            _stage_end(run, index, StageStatus.SKIPPED, f"optional {summary}", ending)
            return Ended(StageStatus.SKIPPED)
        _stage_end(run, index, StageStatus.FAILED, summary, {"exit_code": result.exit_code})
        if torn_down:
            return Ended(StageStatus.FAILED, result.status_detail)
        return Ended(StageStatus.FAILED, stage_detail(stage.id))

    def _record_outcome(
        self,
        index: int,
        stage: CommandStage,
        outcome: StageOutcome,
        *,
        stop_reason: str | None = None,
        attempt_note: str | None = None,
    ) -> Ended:
        """Record how the stage's last attempt ended. ``stop_reason`` explains a cancellation that
        came from the run itself (failFast), not from a signal; ``attempt_note`` (retries) heads the
        summary."""
        stdout_tail, stdout_size = outcome.stdout_tail, outcome.stdout_bytes
        stderr_tail, stderr_size = outcome.stderr_tail, outcome.stderr_bytes
        exit_code = outcome.exit_code
        summary = stage_summary(stage.summary_hint, stdout_tail, stderr_tail, exit_code)
        ending: StageEnding = {
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
        if stage.task_runner is not None and not failed:
            from codex_orchestrator.pipelines.diagnostics.runner_skips import runner_skip

            skipped = runner_skip(stage.task_runner, stdout_tail, stderr_tail, exit_code)
            if skipped is not None:  # tox/nox checked nothing: every environment was skipped
                ending["skip_reason"] = skipped.kind
                _stage_end(self.run, index, StageStatus.SKIPPED, skipped.summary, ending)
                return Ended(StageStatus.SKIPPED)
        if exit_code == 0 and not failed:
            _stage_end(self.run, index, StageStatus.SUCCEEDED, summary, ending)
            return Ended(StageStatus.SUCCEEDED)
        if outcome.timed_out:
            summary = f"timed out after {stage.timeout_seconds:g}s; {summary}"
            reason, detail = "command-timeout", stage_detail(stage.id, StageFailure.TIMEOUT)
        elif outcome.cancelled and not self.ctx.cancellation.requested:
            summary = f"{stop_reason or 'stopped by the run'}; {summary}"
            reason, detail = "command-cancelled", stage_detail(stage.id)
        elif outcome.cancelled:
            signum = self.ctx.cancellation.signum or signal.SIGTERM
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
        failure_record = FailureRecord(reason, details, stdout_tail, stderr_tail)
        error_file = self._write_error_file(index, stage, failure_record)
        if reason == "command-allow-failure":
            ending["skip_reason"] = SkipReason.ALLOWED_FAILURE
            status = StageStatus.SKIPPED
        else:
            status = StageStatus.FAILED
        ending["error_file"] = error_file
        _stage_end(self.run, index, status, summary, ending)
        return Ended(status, detail)

    def _write_error_file(self, index: int, stage: CommandStage, failure: FailureRecord) -> str:
        """Write the stage's error file; its path as the manifest shows it."""
        run = self.run
        header = {
            "run_id": run.run_id,
            "task_id": self.ctx.task_id,
            "command_index": index,
            "command_id": stage.id,
            "reason": failure.reason,
            "created_at": iso_utc(),
        }
        payload = build_error_file(
            header, stage.command, failure.details, failure.stdout_tail, failure.stderr_tail
        )
        path = RunLayout(run.run_dir).error_file(index, stage.id, len(run.pipeline.stages))
        atomic_write_bytes(path, payload)
        return self.ctx.workspace.display(path)


def _attempt_record(attempt: int, entry: StageEntry, outcome: StageOutcome) -> AttemptRecord:
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


def _stage_started(run: ActiveRun, index: int, *, persist: bool = False) -> None:
    """Record the start `ManifestStore.begin_stage` made (persisted now when ``persist``)."""
    if persist:
        run.store.persist_transition()
    entry = run.store.command(index)
    run.events.emit("stage_started", index=index, stage_id=entry["id"], attempt=entry["attempts"])


def _stage_end(
    run: ActiveRun, index: int, status: StageStatus, summary: str, ending: StageEnding
) -> None:
    entry = run.store.end_stage(index, status, summary, ending)
    run.store.persist_transition()
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
        ARGS_ENV: shlex.join(recorded_args(run.store.data)),
        **stage.env,
    }


def recorded_args(manifest: Mapping[str, Any]) -> list[str]:
    """The run's ``args`` (``start -- ARGS``); none for a run recorded before they existed."""
    args = manifest.get("args")
    return [arg for arg in args if isinstance(arg, str)] if isinstance(args, list) else []


def _attempt_logs(run: ActiveRun, index: int, stage_id: str) -> tuple[int, Path, Path]:
    """The next attempt number and its log paths, never those of an earlier attempt.

    The recorded count may lag behind the files (a driver killed between creating the logs
    and recording the attempt), so numbers whose logs exist are skipped: an attempt's logs are
    never truncated by another attempt.
    """
    attempt = run.store.attempts(index) + 1
    layout, count = RunLayout(run.run_dir), len(run.pipeline.stages)
    while True:
        stdout_path, stderr_path = layout.stage_logs(index, stage_id, count, attempt)
        if not (os.path.lexists(stdout_path) or os.path.lexists(stderr_path)):
            return attempt, stdout_path, stderr_path
        attempt += 1


def _stage_handle(run: ActiveRun, index: int, handle: Handle) -> None:
    """Store the executor's handle in the manifest entry and the events."""
    run.store.record_handle(index, handle)
    run.events.emit("stage_handle", index=index, handle=handle)
    run.store.persist_transition()


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
