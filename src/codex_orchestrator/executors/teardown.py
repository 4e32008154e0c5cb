"""When to end a stage, decided in one place: timeout or stop request → SIGTERM → grace → SIGKILL.

`Teardown` holds the decisions and nothing else: each `Teardown.decide` gets the monotonic time
and what its caller observed (a stop request and when it was made, a second request, the
shell's exit, whether anything the shell left still runs) and answers with a `Decision`: the
signal to send now, when to decide again at the latest, and whether the stage is over. It
never signals, reads a clock or sleeps, so tests drive it with injected times.

Each executor supplies the actions: the local executor signals the stage's process group
(``local.py``); the Dask executor turns decisions into control records to the stage's
supervisor (``dask/link.py``). The worker-side supervisor ships to workers as source text
that needs only the standard library, so it keeps a verbatim copy of `Teardown`, `Decision`
and their constants (``dask/worker/supervisor.py``); ``tests/executors/test_teardown.py``
checks that the copy is verbatim and drives both through the same scenarios.

The rules, whoever applies them:

- A timeout fires only while the shell runs; the grace period then counts from the timeout.
- A stop request (a cancellation, a lost scheduler, a supervisor that lost its orchestrator)
  counts its grace period from when it was made (never before the stage started), not from
  when it was noticed; a later, earlier-ending request shortens the grace of a stop or of the
  ending of leftovers (never a timeout's); a second request (`hurry`) kills at once.
- When the shell exits during a teardown, what it left is sent SIGTERM again (orphans adopted
  on its exit included) and SIGKILLed once the same grace period is spent. When it exits on
  its own, what it left is ended likewise only where ``end_leftovers`` says so (a remote
  stage); the local executor lets a stage's helpers live until the run ends.
- SIGKILL is repeated at each decision while something is left (new orphans included); after
  a further `KILL_WAIT_SECONDS` the stage is given up as unkillable (uninterruptible sleep).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import NamedTuple

SIGTERM = int(signal.SIGTERM)
SIGKILL = int(signal.SIGKILL)
#: How long SIGKILLed processes may take to vanish before they are given up.
KILL_WAIT_SECONDS = 2.0

#: Why a stage is being ended (`Teardown.reason`).
TIMEOUT = "timeout"
STOPPED = "stopped"
LEFTOVERS = "leftovers"


class Decision(NamedTuple):
    """What to do now: ``signal`` (0, SIGTERM or SIGKILL) to the stage's processes, the
    monotonic time to decide again at the latest (``wake_at``; None: only on an event), and
    whether nothing of the stage is left to end (``done``)."""

    signal: int
    wake_at: float | None
    done: bool


class Teardown:
    """The decisions of ending one stage (see the module's notes for the rules)."""

    def __init__(
        self, grace: float, started: float, deadline: float | None, end_leftovers: bool
    ) -> None:
        """``started``: the stage's start; ``deadline``: its timeout (both monotonic)."""
        self.grace = grace
        self.started = started
        self.deadline = deadline
        self.end_leftovers = end_leftovers
        self.reason = ""  # TIMEOUT, STOPPED or LEFTOVERS once the stage is being ended
        self.kill_at: float | None = None
        self.killed = False  # SIGKILL was needed to end a timed-out or stopped stage
        self.shell_exited = False

    @property
    def timed_out(self) -> bool:
        """True once the stage's timeout fired."""
        return self.reason == TIMEOUT

    def decide(
        self,
        now: float,
        stop_requested_at: float | None,
        hurry: bool,
        shell_exited: bool,
        leftovers_alive: Callable[[], bool],
    ) -> Decision:
        """What to do at ``now``, given a stop request (when it was made), a second request
        (``hurry``), the shell's exit, and ``leftovers_alive`` (asked only once the shell
        exited: whether anything it left still runs)."""
        known: list[bool] = []

        def alive() -> bool:
            if not known:
                known.append(leftovers_alive())
            return known[0]

        sig = 0
        if not self.reason:
            if not shell_exited and self.deadline is not None and now >= self.deadline:
                self.reason, self.kill_at = TIMEOUT, now + self.grace
            elif stop_requested_at is not None:
                self.reason = STOPPED
                self.kill_at = max(stop_requested_at, self.started) + self.grace
            elif shell_exited and self.end_leftovers and alive():
                self.reason, self.kill_at = LEFTOVERS, now + self.grace
            sig = SIGTERM if self.reason else 0
        elif stop_requested_at is not None and self.reason != TIMEOUT:
            requested = max(stop_requested_at, self.started) + self.grace
            self.kill_at = requested if self.kill_at is None else min(self.kill_at, requested)
        if shell_exited and not self.shell_exited:
            self.shell_exited = True
            if self.reason and not sig:
                sig = SIGTERM  # what the shell left, orphans adopted on its exit included
        if self.kill_at is None:
            waiting = self.deadline is not None and not shell_exited
            return Decision(0, self.deadline if waiting else None, shell_exited)
        if hurry:
            self.kill_at = min(self.kill_at, now)
        if shell_exited and not alive():
            return Decision(0, None, True)
        if sig or now < self.kill_at:
            return Decision(sig, self.kill_at, False)
        if now >= self.kill_at + KILL_WAIT_SECONDS:
            return Decision(0, None, True)  # what is left cannot be killed: give it up
        self.killed = self.killed or self.reason != LEFTOVERS
        return Decision(SIGKILL, self.kill_at + KILL_WAIT_SECONDS, False)
