"""The functions Dask tasks and direct calls to a worker carry as code: run a function of
worker-side source text, keep the key an orchestrator hands a worker, end a stage's leftovers.

The worker-side modules (``dask_remote``, ``dask_supervisor``) travel as source text and need
only the standard library, so workers need Python and Dask, not codex-orchestrator. This module
is pickled by value; it is kept this small because the scheduler and the worker unpickle a
task's function for every task, and unpickling a whole module's functions and classes by
value cost several milliseconds a stage (`bench/run.py --only dask`). The source is compiled
once per worker and orchestrator version.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any


def call(module_source: str, function: str, *args: Any) -> Any:
    """Call ``function`` of the module whose source is ``module_source``, on this worker."""
    from distributed import get_worker

    modules: dict[str, dict[str, Any]] = get_worker().__dict__.setdefault(
        "_codex_orchestrator_modules", {}
    )
    namespace = modules.get(module_source)
    if namespace is None:
        compiled: dict[str, Any] = {"__name__": "codex_orchestrator_worker"}
        exec(
            compile(module_source, "codex_orchestrator/executors/dask/worker/remote.py", "exec"),
            compiled,
        )
        # Tasks starting at once on a multi-threaded worker all use the first one stored.
        namespace = modules.setdefault(module_source, compiled)
    return namespace[function](*args)


def remember(attribute: str, session: bytes, key: bytes, dask_worker: Any) -> None:
    """On a worker, called by the orchestrator directly (Dask's worker RPC, not through the
    scheduler): keep this orchestrator session's worker key where its tasks look for it."""
    dask_worker.__dict__.setdefault(attribute, {})[session] = key


async def reap(
    supervisor_source: str,
    host: str,
    pgid: int,
    leader_start_ticks: int,
    grace_seconds: float,
    mark: str,
    dask_worker: Any,
) -> str:
    """On a worker, called by the orchestrator directly: end what is left of a stage here (its
    group, if verified, and the processes carrying its mark): ``ended``, ``none`` (nothing was
    left) or ``other-host``. It runs on the worker's event loop, not in a task's thread, so a
    worker whose threads are all busy (one with the very stage to end) still answers."""
    if host and os.uname().nodename != host:
        return "other-host"  # the worker's address now belongs to another machine
    argv = ["-I", "-S", "-c", supervisor_source, "reap"]
    argv += [str(pgid), str(leader_start_ticks), repr(grace_seconds), mark]
    process = await asyncio.create_subprocess_exec(sys.executable, *argv, stdin=subprocess.DEVNULL)
    return "ended" if await process.wait() == 0 else "none"
