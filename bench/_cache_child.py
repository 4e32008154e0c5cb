"""A stage-cache operation measured from inside a fresh interpreter (a child of fig_cache).

Usage::

    python bench/_cache_child.py rss FILE        # hash FILE; peak RSS before and after
    python bench/_cache_child.py lookups SPEC    # fingerprint, look up and restore stages

``SPEC`` is JSON: ``{"root", "cache", "commands": [...], "logs"}``; every command's stage
must be a stored entry (inputs ``src/**``). Prints one JSON line. The peak is this process's
own ``VmHWM`` (see ``_rss.py``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from _rss import peak_rss_kib
from codex_orchestrator.cache.fingerprint import Fingerprinter
from codex_orchestrator.cache.key import Fingerprint, stage_fingerprint
from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.cache.store import CacheStore, Hit

INPUTS = CacheSpec(inputs=("src/**",))


def stage_identity(command: str) -> str:
    """The identity the bench gives the stage running ``command``."""
    return f"bench/{command.split()[-1]}"


def fingerprint(
    fingerprinter: Fingerprinter, command: str, spec: CacheSpec = INPUTS
) -> Fingerprint:
    """The fingerprint of the bench stage that runs ``command`` on ``spec``'s inputs."""
    return stage_fingerprint(
        command=command,
        cwd=None,
        env={},
        spec=spec,
        environ={},
        needs={},
        inputs=fingerprinter.inputs(spec),
    )


def rss(path: Path) -> dict[str, object]:
    base = peak_rss_kib()
    fingerprinter = Fingerprinter(path.parent, path.parent / "no-cache", read_only=True)
    digests = fingerprinter.inputs(CacheSpec(inputs=(path.name,)))
    return {"base_kib": base, "peak_kib": peak_rss_kib(), "problem": digests.problem}


def lookups(spec: dict[str, object]) -> dict[str, object]:
    root, cache, logs = Path(str(spec["root"])), Path(str(spec["cache"])), Path(str(spec["logs"]))
    started = time.perf_counter()
    fingerprinter = Fingerprinter(root, cache)
    store = CacheStore(cache, root)
    hits = 0
    commands: list[str] = list(spec["commands"])  # type: ignore[call-overload]
    # Consecutive hits whose restores write no outputs: one snapshot of the tree serves all.
    with fingerprinter.snapshot():
        for command in commands:
            found = store.lookup(stage_identity(command), fingerprint(fingerprinter, command))
            if isinstance(found, Hit):
                name = command.split()[-1]
                store.restore(found, stdout=logs / f"{name}.out", stderr=logs / f"{name}.err")
                hits += 1
    return {"seconds": time.perf_counter() - started, "hits": hits}


def main(argv: list[str]) -> int:
    if argv[0] == "rss":
        print(json.dumps(rss(Path(argv[1]))))
    else:
        print(json.dumps(lookups(json.loads(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
