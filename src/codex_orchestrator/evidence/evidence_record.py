"""The committed evidence record of a task: ``tasks/evidence/<task>.json``.

Run directories are ignored by git, so the manifest an item cites is absent from a fresh
clone. ``tasks mark`` also writes what the manifest proved into this small file, meant to be
committed beside the checklists: per item, the run id, pipeline, status, completion time, each
stage's id, status and summary, and ``proof_sha256``, the SHA-256 of those facts as canonical
JSON. It holds no resume token and no path (the run id names the cited run).

``tasks check`` uses it both ways: with the manifest present, the manifest's facts must still
be the recorded ones (a changed manifest or a hand-edited record is a problem); with the
manifest absent, the record must be whole (its digest matches its facts) and show a succeeded
run of the task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codex_orchestrator.errors import UsageError
from codex_orchestrator.records.statuses import RunStatus
from codex_orchestrator.util.jsonio import array_objects, atomic_write_bytes
from codex_orchestrator.util.safefs import (
    RECORD_SIZE_LIMIT,
    UnreadableFileError,
    read_inside,
    real_directory,
    resolve_within,
)

EVIDENCE_DIR = "tasks/evidence"
VERSION = 1
#: The manifest's facts an item's evidence keeps (stages: id, status, summary each).
FACTS = ("run_id", "task_id", "pipeline_id", "status", "completed_at", "stages")
_LINK_FIX = f"replace the link with a directory of the repository, or remove {EVIDENCE_DIR}"


def record_path(task: str) -> str:
    """The record of ``task``, relative to the root."""
    return f"{EVIDENCE_DIR}/{task}.json"


def manifest_facts(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of a run that an evidence record keeps (see `FACTS`)."""
    return {
        "run_id": manifest.get("run_id"),
        "task_id": manifest.get("task_id"),
        "pipeline_id": manifest.get("pipeline_id"),
        "status": manifest.get("status"),
        "completed_at": manifest.get("completed_at"),
        "stages": [
            {key: command.get(key) for key in ("id", "status", "summary")}
            for command in array_objects(manifest.get("commands"))
        ],
    }


def proof_digest(facts: dict[str, Any]) -> str:
    """SHA-256 of ``facts`` (only the `FACTS` keys) as canonical JSON."""
    canonical = json.dumps(
        {key: facts.get(key) for key in FACTS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def load_record(root: Path, task: str) -> dict[str, dict[str, Any]] | None:
    """The record's entries by item identity; None when there is no record.

    A record that cannot be read or is not a record is a `UsageError` naming the file.
    """
    shown = record_path(task)
    try:
        data = json.loads(read_inside(root, shown, RECORD_SIZE_LIMIT))
    except FileNotFoundError:
        return None
    except (OSError, UnreadableFileError, ValueError) as error:
        raise UsageError(f"{shown}: not a readable evidence record ({error}); restore it") from None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, dict) or not all(isinstance(v, dict) for v in items.values()):
        raise UsageError(f"{shown}: not an evidence record (no 'items' object); restore it")
    return items


def write_entry(root: Path, task: str, item: str, manifest: Mapping[str, Any]) -> str:
    """Record ``manifest`` as the evidence of ``item`` of ``task``; return the record's path."""
    shown = record_path(task)
    real_directory(resolve_within(root / EVIDENCE_DIR, root, EVIDENCE_DIR, _LINK_FIX))
    items = load_record(root, task) or {}
    facts = manifest_facts(manifest)
    items[item] = {"item": item, **facts, "proof_sha256": proof_digest(facts)}
    document = {"version": VERSION, "task": task, "items": dict(sorted(items.items()))}
    payload = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(root / shown, payload.encode("utf-8"))
    return shown


def entry_problem(entry: dict[str, Any], task: str) -> str | None:
    """Why an entry does not prove a succeeded run of ``task``, else None."""
    if entry.get("proof_sha256") != proof_digest(entry):
        return "was changed by hand (its proof_sha256 does not match its facts)"
    if entry.get("task_id") != task:
        return f"names a run of task {entry.get('task_id')}, not {task}"
    if entry.get("status") != RunStatus.SUCCEEDED:
        return f"names a run that is {entry.get('status')}, not succeeded"
    return None


def mismatch(entry: dict[str, Any], manifest: Mapping[str, Any]) -> str | None:
    """The first fact on which the manifest and the record's entry differ, else None."""
    facts = manifest_facts(manifest)
    for key in FACTS:
        if facts[key] != entry.get(key):
            return f"{key} differs (manifest {_short(facts[key])}, record {_short(entry.get(key))})"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
