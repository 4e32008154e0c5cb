"""Run one cache operation on a stage in this process (used by the tests as a child process).

Usage: ``python driver.py STAGE_JSON store RUN_ID [LOG_BYTES]`` or ``... lookup``. Prints one
JSON line: ``{"outcome": ...}``, ``{"error": ...}`` (a `CacheStoreError`) or the lookup's
``{"hit": bool, "reason": ..., "from_run": ...}``; warnings go to stderr.
"""

from __future__ import annotations

import json
import sys

from helpers import Stage

from codex_orchestrator.cache.errors import CacheStoreError
from codex_orchestrator.cache.store import Hit


def main(argv: list[str]) -> int:
    stage = Stage.from_json(argv[0])
    operation = argv[1]
    if operation == "store":
        size = int(argv[3]) if len(argv) > 3 else 0
        stdout = b"x" * size if size else b"all passed\n"
        try:
            outcome = stage.store(argv[2], stdout=stdout)
        except CacheStoreError as error:
            print(json.dumps({"error": str(error)}))
            return 0
        print(json.dumps({"outcome": outcome}))
    elif operation == "lookup":
        found = stage.lookup()
        hit = isinstance(found, Hit)
        print(
            json.dumps(
                {
                    "hit": hit,
                    "reason": None if isinstance(found, Hit) else found.reason,
                    "from_run": found.from_run if isinstance(found, Hit) else None,
                }
            )
        )
    for warning in stage.warnings:
        print(warning, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
