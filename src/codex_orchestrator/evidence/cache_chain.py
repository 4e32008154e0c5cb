"""A run whose stages were cache hits proves them only through the runs that really ran them.

`broken_chain` follows each hit of a manifest (``commands[].cache.from_run``) to the run it
names, and on (a hit of a hit, should one ever be recorded) until a run that started the
stage: that run must exist, hold the stage under the same key, and have succeeded in it.
``tasks mark`` refuses a run whose chain is broken; ``tasks check`` reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.records.cache_field import cache_of, hit_from
from codex_orchestrator.records.manifest import load_manifest
from codex_orchestrator.records.run_layout import MANIFEST_NAME
from codex_orchestrator.records.statuses import StageStatus
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.ids import is_valid_id

#: How many hits in a row are followed before the chain counts as broken (a loop).
MAX_LINKS = 16


def broken_chain(workspace: Workspace, manifest: Mapping[str, Any]) -> str | None:
    """Why a cached stage of ``manifest`` does not lead to a run that really ran it; None
    when every hit does (or there is none)."""
    commands = manifest.get("commands")
    for entry in commands if isinstance(commands, list) else []:
        if isinstance(entry, Mapping) and hit_from(entry) is not None:
            problem = _follow(workspace, entry)
            if problem is not None:
                return f"stage {entry.get('id')} was served from the stage cache: {problem}"
    return None


def _follow(workspace: Workspace, entry: Mapping[str, Any]) -> str | None:
    stage_id, key = entry.get("id"), _key(entry)
    for _ in range(MAX_LINKS):
        source = hit_from(entry)
        if source is None:
            return None  # this run started the stage
        run_id, task = source
        if not is_valid_id(run_id) or (task is not None and not is_valid_id(task)):
            return f"it names {run_id!r}, which is not a run id"
        found = workspace.find_run(run_id, task) or workspace.find_run(run_id)
        if found is None:
            return f"run {run_id}, which ran it, no longer exists"
        try:
            ran = load_manifest(found[1] / MANIFEST_NAME)
        except OrchestratorError:
            return f"the manifest of run {run_id}, which ran it, cannot be read"
        commands = ran.get("commands")
        matches = [
            item
            for item in (commands if isinstance(commands, list) else [])
            if isinstance(item, Mapping) and item.get("id") == stage_id
        ]
        if not matches:
            return f"run {run_id} has no stage {stage_id}"
        entry = matches[0]
        if entry.get("status") != StageStatus.SUCCEEDED or entry.get("exit_code") != 0:
            return f"run {run_id} did not succeed in stage {stage_id}"
        if _key(entry) != key:
            return f"run {run_id} ran stage {stage_id} on other inputs (another cache key)"
    return f"more than {MAX_LINKS} runs in a row name one another"


def _key(entry: Mapping[str, Any]) -> object:
    field = cache_of(entry)
    return field.get("key") if field is not None else None
