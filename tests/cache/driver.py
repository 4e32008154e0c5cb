"""Run cache operations on a stage in this process (the tests' child processes).

Usage: ``python driver.py STAGE_JSON OPERATIONS_JSON``, where operations are a list of
``["store", RUN_ID, LOG_SIZE]`` (LOG_SIZE 0: a short log; otherwise a sparse log of that many
bytes), ``["lookup"]`` and ``["state"]``. Prints one JSON line per operation: ``{"outcome":
...}`` or ``{"error": ...}`` (a `CacheStoreError`); ``{"hit": ..., "reason": ...,
"from_run": ...}``; ``{"entries": N, "partial": N}``. Warnings go to stderr.
"""

from __future__ import annotations

import json
import os
import sys

from cache_kit import Stage, entry_dirs

from codex_orchestrator.cache.errors import CacheStoreError
from codex_orchestrator.cache.store import Hit


def run(stage: Stage, operation: list[object]) -> dict[str, object]:
    if operation[0] == "store":
        run_id, size = str(operation[1]), int(operation[2])  # type: ignore[call-overload]
        if not size:
            return _store(stage, run_id, None)
        logs = stage.cache.parent / f"big-{run_id}-{os.getpid()}.log"
        with open(logs, "wb") as handle:
            handle.truncate(size)
        return _store(stage, run_id, logs)
    if operation[0] == "lookup":
        found = stage.lookup()
        if isinstance(found, Hit):
            return {"hit": True, "reason": None, "from_run": found.from_run}
        return {"hit": False, "reason": found.reason, "from_run": None}
    tmp = stage.cache / "tmp"
    partial = len(os.listdir(tmp)) if tmp.is_dir() else 0
    return {"entries": len(entry_dirs(stage.cache)), "partial": partial}


def _store(stage: Stage, run_id: str, log: object) -> dict[str, object]:
    try:
        if log is None:
            return {"outcome": stage.store(run_id)}
        return {"outcome": stage.store_log(run_id, log)}  # type: ignore[arg-type]
    except CacheStoreError as error:
        return {"error": str(error)}


def main(argv: list[str]) -> int:
    stage = Stage.from_json(argv[0])
    for operation in json.loads(argv[1]):
        print(json.dumps(run(stage, operation)), flush=True)
    for warning in stage.warnings:
        print(warning, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
