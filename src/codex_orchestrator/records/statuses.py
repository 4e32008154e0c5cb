"""One vocabulary for run and stage statuses, ``status_detail`` values and exit codes.

Every status written to a record or compared against one comes from here; ``StrEnum`` members
serialise as their plain string values, so records stay byte-compatible.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from enum import StrEnum

from codex_orchestrator.errors import EXIT_FAILED, EXIT_OK, EXIT_SKIPPED


class RunStatus(StrEnum):
    """Status of a run (manifest ``status``)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: No stage ran anything: every stage was skipped for a missing tool or nothing to run.
    SKIPPED = "skipped"


TERMINAL_RUN_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SKIPPED}
)


class StageStatus(StrEnum):
    """Status of one stage (manifest ``commands[].status``)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


DONE_STAGE_STATUSES = frozenset({StageStatus.SUCCEEDED, StageStatus.SKIPPED})


class SkipReason(StrEnum):
    """Why a stage was skipped (manifest ``commands[].skip_reason``)."""

    TOOL_MISSING = "tool-missing"
    NOT_APPLICABLE = "not-applicable"
    ALLOWED_FAILURE = "allowed-failure"
    OPTIONAL_FAILED = "optional-failed"
    NEEDS_FAILED = "needs-failed"
    NOT_SELECTED = "not-selected"  # left out by ``start --only``


#: Skips in which the stage ran nothing (its tool is missing, or there is nothing to run).
NOTHING_RAN_SKIPS = frozenset({SkipReason.TOOL_MISSING, SkipReason.NOT_APPLICABLE})


def nothing_ran(commands: Sequence[Mapping[str, object]]) -> bool:
    """True when no stage ran anything: every selected stage was skipped for a missing tool or
    because there was nothing to run (such a run ends ``skipped``, not ``succeeded``)."""
    selected = [entry for entry in commands if entry.get("skip_reason") != SkipReason.NOT_SELECTED]
    return bool(selected) and all(
        entry.get("status") == StageStatus.SKIPPED and entry.get("skip_reason") in NOTHING_RAN_SKIPS
        for entry in selected
    )


class CacheStatus(StrEnum):
    """What the stage cache did for a stage (manifest ``commands[].cache.status``)."""

    HIT = "hit"  # not run: the logs and outputs of the run that ran it were restored
    MISS = "miss"  # run (and stored if it succeeded cleanly)
    OFF = "off"  # the stage has a cache, but caching is off for the repository


class StageFailure(StrEnum):
    """The ``<kind>`` of a ``stage:<id>:<kind>`` status detail."""

    FAILED = "failed"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker-lost"
    SCHEDULER_LOST = "scheduler-lost"


SIGNAL_DETAIL_PREFIX = "signal:"
CANCELLED_DETAIL = "cancelled"
#: The detail of a child run ended on its parent's resume because its driver had died.
DRIVER_LOST_DETAIL = "driver-lost"
#: The detail of a run that ended ``skipped``.
NOTHING_RAN_DETAIL = "nothing-ran"


def stage_detail(stage_id: str, failure: StageFailure = StageFailure.FAILED) -> str:
    """``stage:<id>:<kind>``, the detail of a run ended by one of its stages."""
    return f"stage:{stage_id}:{failure.value}"


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, ``SIG42`` for a number the platform has no name for."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def signal_detail(signum: int) -> str:
    """``signal:<NAME>``, the detail of a run cancelled by a signal."""
    return f"{SIGNAL_DETAIL_PREFIX}{signal_name(signum)}"


def signal_from_detail(detail: str | None) -> int | None:
    """The signal number named by a ``signal:<NAME>`` detail, else None."""
    if not detail or not detail.startswith(SIGNAL_DETAIL_PREFIX):
        return None
    name = detail[len(SIGNAL_DETAIL_PREFIX) :]
    try:
        return int(signal.Signals[name])
    except KeyError:
        return None


def signal_exit_code(signum: int) -> int:
    """Shell convention: ended by signal N is exit code 128+N."""
    return 128 + signum


def run_exit_code(status: str, detail: str | None) -> int:
    """The CLI exit code for a run that ended with ``status`` and ``detail``."""
    if status == RunStatus.SUCCEEDED:
        return EXIT_OK
    if status == RunStatus.SKIPPED:
        return EXIT_SKIPPED
    if status == RunStatus.CANCELLED:
        signum = signal_from_detail(detail)
        return signal_exit_code(signum if signum is not None else signal.SIGTERM)
    return EXIT_FAILED
