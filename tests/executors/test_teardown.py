"""The teardown's decisions, with injected times, for the orchestrator's `Teardown` and for the
worker-side supervisor's copy of it (which ships to workers alone): the same source, the same
sequence of signals at the same moments."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

from codex_orchestrator.executors import teardown
from codex_orchestrator.executors.dask.worker import supervisor
from codex_orchestrator.executors.teardown import (
    KILL_WAIT_SECONDS,
    LEFTOVERS,
    SIGKILL,
    SIGTERM,
    STOPPED,
    TIMEOUT,
    Decision,
)

BOTH = pytest.mark.parametrize("module", [teardown, supervisor], ids=["orchestrator", "worker"])


def test_the_supervisor_carries_a_verbatim_copy() -> None:
    for name in ("Decision", "Teardown"):
        assert inspect.getsource(getattr(supervisor, name)) == inspect.getsource(
            getattr(teardown, name)
        ), f"supervisor.{name} differs from teardown.{name}: copy it over again"
    for name in ("SIGTERM", "SIGKILL", "KILL_WAIT_SECONDS", "TIMEOUT", "STOPPED", "LEFTOVERS"):
        assert getattr(supervisor, name) == getattr(teardown, name), name


def _steps(
    machine: object, *events: tuple[float, float | None, bool, bool, bool]
) -> list[Decision]:
    """Decisions at each ``(now, stop_requested_at, hurry, shell_exited, leftovers_alive)``."""
    return [
        machine.decide(now, stop, hurry, exited, lambda alive=alive: alive)  # type: ignore[attr-defined]
        for now, stop, hurry, exited, alive in events
    ]


@BOTH
def test_a_timeout_terminates_then_kills_after_the_grace(module: ModuleType) -> None:
    machine = module.Teardown(2.0, 0.0, 10.0, end_leftovers=False)
    assert _steps(
        machine,
        (9.0, None, False, False, True),
        (10.0, None, False, False, True),
        (11.0, None, False, False, True),
        (12.0, None, False, False, True),
        (12.5, None, False, True, False),
    ) == [
        (0, 10.0, False),
        (SIGTERM, 12.0, False),
        (0, 12.0, False),
        (SIGKILL, 12.0 + KILL_WAIT_SECONDS, False),
        (0, None, True),
    ]
    assert machine.reason == TIMEOUT and machine.timed_out and machine.killed


@BOTH
def test_a_stop_counts_its_grace_from_the_request_never_before_the_start(
    module: ModuleType,
) -> None:
    noticed_late = module.Teardown(2.0, 0.0, None, end_leftovers=False)
    assert _steps(noticed_late, (6.0, 5.0, False, False, True)) == [(SIGTERM, 7.0, False)]
    before_start = module.Teardown(2.0, 4.0, None, end_leftovers=False)
    assert _steps(before_start, (4.5, 1.0, False, False, True)) == [(SIGTERM, 6.0, False)]
    assert noticed_late.reason == before_start.reason == STOPPED


@BOTH
def test_a_second_request_kills_at_once_and_an_earlier_ending_one_shortens(
    module: ModuleType,
) -> None:
    hurried = module.Teardown(5.0, 0.0, None, end_leftovers=False)
    assert _steps(hurried, (1.0, 1.0, False, False, True), (1.5, 1.0, True, False, True)) == [
        (SIGTERM, 6.0, False),
        (SIGKILL, 1.5 + KILL_WAIT_SECONDS, False),
    ]
    shortened = module.Teardown(5.0, 0.0, None, end_leftovers=False)
    assert _steps(shortened, (1.0, 1.0, False, False, True), (2.0, -1.0, False, False, True)) == [
        (SIGTERM, 6.0, False),
        (0, 5.0, False),
    ]


@BOTH
def test_a_timeout_is_not_lengthened_or_shortened_by_a_later_stop(module: ModuleType) -> None:
    machine = module.Teardown(5.0, 0.0, 1.0, end_leftovers=False)
    assert _steps(machine, (1.0, None, False, False, True), (2.0, -10.0, False, False, True)) == [
        (SIGTERM, 6.0, False),
        (0, 6.0, False),
    ]
    assert machine.timed_out


@BOTH
def test_a_shell_that_exits_on_its_own_leaves_helpers_only_where_told(module: ModuleType) -> None:
    local = module.Teardown(2.0, 0.0, 10.0, end_leftovers=False)
    assert _steps(local, (3.0, None, False, True, True)) == [(0, None, True)]
    remote = module.Teardown(2.0, 0.0, None, end_leftovers=True)
    assert _steps(
        remote,
        (3.0, None, False, True, True),
        (5.0, None, False, True, True),
        (5.1, None, False, True, False),
    ) == [(SIGTERM, 5.0, False), (SIGKILL, 5.0 + KILL_WAIT_SECONDS, False), (0, None, True)]
    assert remote.reason == LEFTOVERS and not remote.killed  # the stage itself ended on its own
    nothing_left = module.Teardown(2.0, 0.0, None, end_leftovers=True)
    assert _steps(nothing_left, (3.0, None, False, True, False)) == [(0, None, True)]


@BOTH
def test_what_the_shell_leaves_mid_teardown_is_terminated_again(module: ModuleType) -> None:
    machine = module.Teardown(2.0, 0.0, None, end_leftovers=False)
    assert _steps(
        machine,
        (1.0, 1.0, False, False, True),
        (1.5, 1.0, False, True, True),  # the shell exited: orphans it left get SIGTERM too
        (1.6, 1.0, False, True, False),
    ) == [(SIGTERM, 3.0, False), (SIGTERM, 3.0, False), (0, None, True)]
    assert not machine.killed


@BOTH
def test_an_unkillable_stage_is_given_up_after_the_kill_wait(module: ModuleType) -> None:
    machine = module.Teardown(1.0, 0.0, 1.0, end_leftovers=False)
    decisions = _steps(
        machine,
        (1.0, None, False, False, True),
        (2.0, None, False, False, True),
        (3.0, None, False, False, True),  # SIGKILL again: orphans adopted meanwhile too
        (2.0 + KILL_WAIT_SECONDS, None, False, False, True),
    )
    assert [d.signal for d in decisions] == [SIGTERM, SIGKILL, SIGKILL, 0]
    assert decisions[-1].done and machine.killed
