"""The stage loop on its own: which stage starts when, on which thread, and what a failure, a
retry, failFast or a signal does, with a scripted runner in place of the run's records.

Nothing is spawned: each stage's attempt is a scripted result, so these tests are fast and
check the loop's decisions exactly.
"""

from __future__ import annotations

import select
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import pytest

from codex_orchestrator.engine.stage_loop import (
    Ended,
    Finish,
    LoopState,
    Post,
    RetryIn,
    StageLoop,
    Work,
)
from codex_orchestrator.executors.base import Cancellation
from codex_orchestrator.records.statuses import StageStatus


class StageNode(NamedTuple):
    """A stage as the loop sees it (`graph.HasNeeds`)."""

    id: str
    needs: tuple[str, ...] | None


OK = Ended(StageStatus.SUCCEEDED)
SKIPPED = Ended(StageStatus.SKIPPED)


def failed(stage_id: str) -> Ended:
    return Ended(StageStatus.FAILED, f"stage:{stage_id}:failed")


class ScriptedRunner:
    """A `StageRunner` whose attempts end as scripted, per stage id, in order: an `Ended` or a
    `RetryIn`. A stage scripted ``"skip"`` ends at once without work (a missing tool)."""

    def __init__(self, stages: Sequence[StageNode], script: dict[str, list[object]]) -> None:
        self.ids = {index: stage.id for index, stage in enumerate(stages, start=1)}
        self.script = {stage_id: list(results) for stage_id, results in script.items()}
        self.log: list[tuple[object, ...]] = []
        self.states: dict[str, LoopState] = {}
        self.threads: dict[str, set[int]] = {}
        self.cancellations: dict[str, Cancellation] = {}
        self.hooks: dict[str, object] = {}  # stage id -> callable run inside its work
        self.main = threading.get_ident()

    def start(self, index: int, cancellation: Cancellation, post: Post) -> Ended | Work:
        stage_id = self.ids[index]
        self.log.append(("start", stage_id))
        self.cancellations[stage_id] = cancellation
        if self.script.get(stage_id, [OK])[0] == "skip":
            self.script[stage_id].pop(0)
            self.log.append(("end", stage_id, StageStatus.SKIPPED))
            return SKIPPED

        def work() -> Finish:
            self.threads.setdefault(stage_id, set()).add(threading.get_ident())
            hook = self.hooks.get(stage_id)
            if callable(hook):
                hook()
            return lambda state: self._finish(stage_id, state)

        return work

    def _finish(self, stage_id: str, state: LoopState) -> Ended | RetryIn:
        assert threading.get_ident() == self.main  # recording happens in the main flow only
        self.states[stage_id] = state
        results = self.script.get(stage_id) or [OK]
        result = results.pop(0) if len(results) > 1 else results[0]
        assert isinstance(result, (Ended, RetryIn))
        if isinstance(result, Ended):
            self.log.append(("end", stage_id, result.status))
        else:
            self.log.append(("retry", stage_id))
        return result

    def skip_needs_failed(self, skips: Sequence[tuple[int, str]]) -> None:
        self.log.append(("needs_failed", tuple((self.ids[index], name) for index, name in skips)))

    def interrupted(self, index: int, reason: str) -> Ended:
        self.log.append(("interrupted", self.ids[index], reason))
        return failed(self.ids[index])

    def started(self) -> list[str]:
        return [str(entry[1]) for entry in self.log if entry[0] == "start"]


@pytest.fixture
def signals() -> Iterator[Cancellation]:
    cancellation = Cancellation(grace_seconds=1.0)
    yield cancellation
    cancellation.close()


def sequential(*ids: str) -> list[StageNode]:
    return [StageNode(stage_id, None) for stage_id in ids]


def loop_of(
    stages: Sequence[StageNode],
    runner: ScriptedRunner,
    signals: Cancellation,
    *,
    max_parallel: int = 4,
    fail_fast: bool = False,
    done: Sequence[str] = (),
) -> StageLoop:
    return StageLoop(
        stages, runner, signals, max_parallel=max_parallel, fail_fast=fail_fast, done=done
    )


def test_a_sequential_pipeline_runs_inline_in_order_and_halts_at_its_first_failure(
    signals: Cancellation,
) -> None:
    stages = sequential("a", "b", "c")
    runner = ScriptedRunner(stages, {"b": [failed("b")]})
    loop = loop_of(stages, runner, signals)

    assert loop.run() == "stage:b:failed"
    assert runner.started() == ["a", "b"]  # c stays pending, as it always has
    assert loop.scheduler.first_failure == "b"
    assert all(threads == {runner.main} for threads in runner.threads.values())


def test_a_skipped_stage_frees_its_place_and_its_dependents_run(signals: Cancellation) -> None:
    stages = sequential("a", "b")
    runner = ScriptedRunner(stages, {"a": ["skip"]})

    assert loop_of(stages, runner, signals).run() is None
    assert runner.log == [
        ("start", "a"),
        ("end", "a", StageStatus.SKIPPED),
        ("start", "b"),
        ("end", "b", StageStatus.SUCCEEDED),
    ]


def test_done_stages_of_a_resumed_run_are_not_started_again(signals: Cancellation) -> None:
    stages = sequential("a", "b", "c")
    runner = ScriptedRunner(stages, {})

    assert loop_of(stages, runner, signals, done=["a", "b"]).run() is None
    assert runner.started() == ["c"]


def test_a_graph_failure_skips_what_needs_it_and_other_branches_go_on(
    signals: Cancellation,
) -> None:
    stages = [
        StageNode("a", ()),
        StageNode("b", ("a",)),
        StageNode("c", ("b",)),
        StageNode("d", ("c",)),
        StageNode("e", ("a",)),
    ]
    runner = ScriptedRunner(stages, {"b": [failed("b")]})
    loop = loop_of(stages, runner, signals, max_parallel=1)

    assert loop.run() == "stage:b:failed"
    assert ("needs_failed", (("c", "b"), ("d", "b"))) in runner.log
    assert runner.started() == ["a", "b", "e"]
    assert all(runner.main not in threads for threads in runner.threads.values())


def test_a_graph_runs_at_most_max_parallel_stages_at_once(signals: Cancellation) -> None:
    stages = [StageNode(stage_id, ()) for stage_id in ("a", "b", "c", "d")]
    runner = ScriptedRunner(stages, {})
    running = 0
    peak = 0
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=10)  # broken (and the test failed) unless two overlap

    def hold(wait: bool) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if wait:
            both.wait()
        with lock:
            running -= 1

    runner.hooks = {"a": lambda: hold(True), "b": lambda: hold(True)}
    runner.hooks |= {"c": lambda: hold(False), "d": lambda: hold(False)}

    assert loop_of(stages, runner, signals, max_parallel=2).run() is None
    assert peak == 2 and sorted(runner.started()) == ["a", "b", "c", "d"]


def test_fail_fast_cancels_the_running_stages_and_tells_them_why(signals: Cancellation) -> None:
    stages = [StageNode("quick", ()), StageNode("slow", ()), StageNode("later", ("slow",))]
    runner = ScriptedRunner(stages, {"quick": [failed("quick")], "slow": [failed("slow")]})

    def until_cancelled() -> None:  # the stage runs until the run's own cancellation says stop
        ready, _, _ = select.select([runner.cancellations["slow"].wakeup_fd()], [], [], 10)
        assert ready, "failFast never cancelled the running stage"

    runner.hooks["slow"] = until_cancelled
    loop = loop_of(stages, runner, signals, max_parallel=2, fail_fast=True)

    assert loop.run() == "stage:quick:failed"
    assert runner.states["slow"] == LoopState(True, "stopped by failFast after quick failed")
    assert not signals.requested  # the signals' cancellation is the invocation's, untouched
    assert "later" not in runner.started()
    assert not any(entry[0] == "needs_failed" for entry in runner.log)  # stopped: left pending


def test_a_retried_stage_starts_again_until_it_ends(signals: Cancellation) -> None:
    stages = sequential("a", "b")
    runner = ScriptedRunner(stages, {"a": [RetryIn(0), RetryIn(0), OK]})

    assert loop_of(stages, runner, signals).run() is None
    assert runner.started() == ["a", "a", "a", "b"]


def test_a_signal_ends_a_stage_waiting_to_retry_without_another_attempt(
    signals: Cancellation,
) -> None:
    stages = sequential("a", "b")
    runner = ScriptedRunner(stages, {"a": [RetryIn(3600)]})
    real_finish = runner._finish

    def finish_then_signal(stage_id: str, state: LoopState) -> Ended | RetryIn:
        result = real_finish(stage_id, state)
        signals.request(signal.SIGTERM)  # arrives while the stage waits for its retry
        return result

    runner._finish = finish_then_signal  # type: ignore[method-assign]
    loop = loop_of(stages, runner, signals)

    assert loop.run() == "stage:a:failed"
    assert runner.log[-1] == ("interrupted", "a", "cancelled by SIGTERM")
    assert runner.started() == ["a"]


def test_a_fault_in_a_worker_is_raised_in_the_main_flow_and_the_other_stages_are_stopped(
    signals: Cancellation,
) -> None:
    stages = [StageNode("broken", ()), StageNode("other", ())]
    runner = ScriptedRunner(stages, {})

    def fault() -> None:
        raise RuntimeError("orchestrator bug")

    def until_cancelled() -> None:
        ready, _, _ = select.select([runner.cancellations["other"].wakeup_fd()], [], [], 10)
        assert ready, "the fault did not stop the other stage"

    runner.hooks = {"broken": fault, "other": until_cancelled}
    loop = loop_of(stages, runner, signals, max_parallel=2)

    with pytest.raises(RuntimeError, match="orchestrator bug"):
        loop.run()
    assert loop.scheduler.halted and not signals.requested
