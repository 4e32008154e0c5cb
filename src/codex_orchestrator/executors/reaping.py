"""Which executor ends what a dead run's stage left, by the kind of the stage's handle.

A handle's ``kind`` names the executor that wrote it. The run's own executor reaps its own
kind (a connected Dask executor reaches the workers); handles of another kind go to the
executor registered for that kind here, when it can reap without being chosen for the run
(the local one can: a local run resumed on Dask still ends its local groups). Every other
kind is left alone (fail closed): nothing is signalled that no executor can verify.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from codex_orchestrator.executors.base import HANDLE_KIND, LOCAL_KIND, Executor, Handle

#: Reaps one handle with a grace period; True when something was ended.
Reaper = Callable[[Handle, float], bool]


def _local_reaper(grace_seconds: float) -> Reaper:
    from codex_orchestrator.executors.local import LocalExecutor

    return LocalExecutor(grace_seconds).reap


#: Kinds whose handles can be reaped by an executor made for the purpose (by grace period).
STANDALONE_REAPERS: dict[str, Callable[[float], Reaper]] = {LOCAL_KIND: _local_reaper}


class Reapers:
    """The reaper of each handle kind for one run: its executor's, then the standalone ones
    (each made once, so a local reaper sweeps a run's escaped processes once)."""

    def __init__(self, executor: Executor, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self._by_kind: dict[str, Reaper] = {executor.name: executor.reap}

    def reaper(self, kind: object) -> Reaper | None:
        """The reaper of handles of ``kind``, or None when none can reap them here."""
        if not isinstance(kind, str):
            return None
        if kind not in self._by_kind and kind in STANDALONE_REAPERS:
            self._by_kind[kind] = STANDALONE_REAPERS[kind](self.grace_seconds)
        return self._by_kind.get(kind)

    def reap(self, handles: Iterable[Handle]) -> bool:
        """End what each handle names (each reaper verifies its handle first); True when
        something was ended."""
        ended = False
        for handle in handles:
            reaper = self.reaper(handle.get(HANDLE_KIND))
            if reaper is not None:
                ended = reaper(handle, self.grace_seconds) or ended
        return ended
