"""The stage loop: which stage starts when, on which thread, and what happens on failure.

A sequential pipeline runs each stage inline, one after the other, exactly as it always has. A
graph pipeline (see docs/graphs.md) runs each stage in a worker thread as soon as its needs
have succeeded, at most ``max_parallel`` at once. Either way the main flow (the thread that
calls `StageLoop.run`) is the only one that records anything: a worker only runs the stage
through the executor and hands back, through the `MainFlow`, a callable that records it.

What a stage *is* (a command, a child run) and how it is recorded is the `StageRunner`'s
business; this module only knows ids, needs, statuses and time.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple, NoReturn, Protocol

from codex_orchestrator.engine.parallel import LinkedCancellation, MainFlow
from codex_orchestrator.executors.base import Cancellation
from codex_orchestrator.pipelines.graph import HasNeeds, Scheduler, is_graph
from codex_orchestrator.records.statuses import StageStatus, signal_name

#: How long the loop waits for its worker threads beyond the teardown grace period.
WORKER_JOIN_SECONDS = 10.0


class Ended(NamedTuple):
    """How a stage ended: ``succeeded``, ``skipped`` or ``failed`` (with the run's detail)."""

    status: StageStatus
    detail: str | None = None


class RetryIn(NamedTuple):
    """The attempt failed and is recorded; start the next one in ``seconds``."""

    seconds: float


class LoopState(NamedTuple):
    """What a finishing stage may need to know: is the run stopping, and why."""

    stopping: bool
    stop_reason: str | None


#: Records an attempt in the main flow once it is over: the stage ended, or retries.
Finish = Callable[[LoopState], Ended | RetryIn]
#: Runs an attempt (in a worker thread, or inline); returns how to record it.
Work = Callable[[], Finish]
Post = Callable[[Callable[[], None]], None]


class StageRunner(Protocol):
    """What the loop needs from the runner, all called in the main flow."""

    def start(self, index: int, cancellation: Cancellation, post: Post) -> Ended | Work:
        """Begin stage ``index`` (1-based) or its next attempt: the work to run, or how it
        ended at once (e.g. skipped). ``post`` hands callables from a worker to the main flow."""
        ...

    def skip_needs_failed(self, skips: Sequence[tuple[int, str]]) -> None:
        """Record stages that will not run because the named stage failed."""
        ...

    def interrupted(self, index: int, reason: str) -> Ended:
        """Record a stage waiting to retry as ended by ``reason`` (it is never retried)."""
        ...


class StageLoop:
    """Runs the stages not yet done, in the order their needs allow."""

    def __init__(
        self,
        stages: Sequence[HasNeeds],
        runner: StageRunner,
        signals: Cancellation,
        *,
        max_parallel: int,
        fail_fast: bool,
        done: Sequence[str],
    ) -> None:
        self.graph = is_graph(stages)
        self.runner = runner
        self.signals = signals
        self.indexes = {stage.id: index for index, stage in enumerate(stages, start=1)}
        self.scheduler = Scheduler(
            stages, max_parallel if self.graph else 1, fail_fast=fail_fast, done=done
        )
        self.fail_fast = fail_fast and self.graph
        # a graph run has its own cancellation, so that failFast can tear down its stages
        self.cancellation = LinkedCancellation(signals) if self.graph else signals
        self.flow = MainFlow()
        self.retry_at: dict[str, float] = {}
        self.workers: list[threading.Thread] = []
        self.stop_reason: str | None = None
        self.failure_detail: str | None = None

    def run(self) -> str | None:
        """Run until no stage can start and none is running; the first failure's detail."""
        try:
            while True:
                self._start_ready()
                if self._start_due_retries():
                    continue  # an inline retry may have ended its stage: what it frees may start
                if not self.scheduler.running:
                    return self.failure_detail
                watched = () if self.stop_reason else (self.signals.wakeup_fd(),)
                self.flow.wait(self._next_retry_in(), *watched)
                self.flow.run_posted()
        except BaseException:
            self._abandon()
            raise
        finally:
            self._close()

    def _start_ready(self) -> None:
        """Start what may start; a stage that ends at once (inline, skipped) frees its place."""
        self._follow_signals()
        while ready := self.scheduler.start_ready():
            for stage_id in ready:
                self._start(stage_id)
            self._follow_signals()

    def _follow_signals(self) -> None:
        if self.stop_reason is not None or not self.signals.requested:
            return
        self.stop_reason = f"cancelled by {signal_name(self.signals.signum or signal.SIGTERM)}"
        self.scheduler.halt()
        if isinstance(self.cancellation, LinkedCancellation):
            self.cancellation.follow()
        self._interrupt_retries()

    def _start(self, stage_id: str) -> None:
        started = self.runner.start(self.indexes[stage_id], self.cancellation, self.flow.post)
        if isinstance(started, Ended):
            self._ended(stage_id, started)
        elif not self.graph:
            self._finish(stage_id, started())
        else:
            worker = threading.Thread(
                target=self._work, args=(stage_id, started), name=f"stage-{stage_id}", daemon=True
            )
            self.workers.append(worker)
            worker.start()

    def _work(self, stage_id: str, work: Work) -> None:
        """A worker thread: run the attempt, hand its recording to the main flow."""
        try:
            finish = work()
        except BaseException as error:  # a fault in the orchestrator: the main flow ends the run
            self.flow.post(partial(_reraise, error))
            return
        self.flow.post(lambda: self._finish(stage_id, finish))

    def _finish(self, stage_id: str, finish: Finish) -> None:
        result = finish(LoopState(self.scheduler.halted, self.stop_reason))
        if isinstance(result, RetryIn):
            self.retry_at[stage_id] = time.monotonic() + result.seconds
        else:
            self._ended(stage_id, result)

    def _ended(self, stage_id: str, ended: Ended) -> None:
        failed = ended.status == StageStatus.FAILED
        if failed and self.failure_detail is None:
            self.failure_detail = ended.detail
        skips = self.scheduler.finish(
            stage_id, not failed, skip_dependents=self.stop_reason is None
        )
        if skips:
            self.runner.skip_needs_failed([(self.indexes[s.stage_id], s.failed) for s in skips])
        if failed and self.fail_fast and self.stop_reason is None:
            self.stop_reason = f"stopped by failFast after {stage_id} failed"
            self.cancellation.request(signal.SIGTERM)
            self._interrupt_retries()

    def _interrupt_retries(self) -> None:
        reason = self.stop_reason or "stopped"
        for stage_id in list(self.retry_at):
            del self.retry_at[stage_id]
            self._ended(stage_id, self.runner.interrupted(self.indexes[stage_id], reason))

    def _start_due_retries(self) -> bool:
        """Start the attempts whose retry delay is over; True when any started."""
        now = time.monotonic()
        due = [stage_id for stage_id, at in self.retry_at.items() if at <= now]
        for stage_id in due:
            if self.retry_at.pop(stage_id, None) is not None:  # not interrupted meanwhile
                self._start(stage_id)
        return bool(due)

    def _next_retry_in(self) -> float | None:
        if not self.retry_at:
            return None
        return max(0.0, min(self.retry_at.values()) - time.monotonic())

    def _abandon(self) -> None:
        """After a fault: start nothing more and end the running stages."""
        self.scheduler.halt()
        if isinstance(self.cancellation, LinkedCancellation) and not self.cancellation.requested:
            self.cancellation.request(signal.SIGTERM)

    def _close(self) -> None:
        """Wait for the workers (each has handed back its result, or is ending its stage)."""
        deadline = time.monotonic() + self.cancellation.grace_seconds + WORKER_JOIN_SECONDS
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if any(worker.is_alive() for worker in self.workers):
            return  # a stuck worker may still wait on them: leave the descriptors open
        self.flow.close()
        if isinstance(self.cancellation, LinkedCancellation):
            self.cancellation.close()


def _reraise(error: BaseException) -> NoReturn:
    raise error
