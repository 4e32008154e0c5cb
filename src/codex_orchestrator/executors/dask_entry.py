"""The functions Dask tasks and worker calls carry as code: run a function of worker-side source
text, and keep the key an orchestrator hands a worker.

The worker-side modules (``dask_remote``, ``dask_supervisor``) travel as source text and need
only the standard library, so workers need Python and Dask, not codex-orchestrator. This module
is pickled by value; it is kept this small because the scheduler and the worker unpickle a
task's function for every task, and unpickling a whole module's functions and classes by
value cost several milliseconds a stage (`bench/run.py --only dask`). The source is compiled
once per worker and orchestrator version.
"""

from __future__ import annotations

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
            compile(module_source, "codex_orchestrator/executors/dask_remote.py", "exec"), compiled
        )
        # Tasks starting at once on a multi-threaded worker all use the first one stored.
        namespace = modules.setdefault(module_source, compiled)
    return namespace[function](*args)


def remember(attribute: str, session: bytes, key: bytes, dask_worker: Any) -> None:
    """On a worker, called by the orchestrator directly (Dask's worker RPC, not through the
    scheduler): keep this orchestrator session's worker key where its tasks look for it."""
    dask_worker.__dict__.setdefault(attribute, {})[session] = key
