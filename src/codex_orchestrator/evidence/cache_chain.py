"""A run whose stages were cache hits proves them only through the runs that really ran them.

`CacheChains.follow` follows each hit of a manifest (``commands[].cache.from_run``) to the run
it names, and on (a hit of a hit, should one ever be recorded) until a run that started the
stage: that run must exist, hold the stage under the same key, and have succeeded in it.
``tasks mark`` refuses a run whose chain is broken; ``tasks check`` reports it.

A run is looked for in this worktree's runs directory first; only when it is not there, in
those of the repository's other worktrees (`worktree_runs`): worktrees may share one cache
directory, so a hit served here may have been stored by a run of another. The checks are the
same wherever the run is; where it is found is part of the answer (`Proof`), so that the
evidence names a manifest a reviewer can open.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.records.cache_field import cache_of, hit_from
from codex_orchestrator.records.manifest import load_manifest
from codex_orchestrator.records.run_layout import MANIFEST_NAME
from codex_orchestrator.records.statuses import StageStatus
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.ids import is_valid_id
from codex_orchestrator.util.jsonio import array_objects

if TYPE_CHECKING:
    from codex_orchestrator.evidence.worktree_runs import OtherWorktrees

#: How many hits in a row are followed before the chain counts as broken (a loop).
MAX_LINKS = 16


class Proof(NamedTuple):
    """Where a cached stage really ran: the run and its manifest (a real path), and the other
    worktree that holds it (None: this one)."""

    stage: str
    run_id: str
    manifest: Path
    worktree: Path | None


class Chain(NamedTuple):
    """The runs that really ran a manifest's cached stages, or why one does not lead to one."""

    proofs: tuple[Proof, ...]
    broken: str | None


class CacheChains:
    """Follows manifests' cache hits; one per command (other worktrees are listed once)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._others: OtherWorktrees | None = None  # made when a run is not found here

    def follow(self, manifest: Mapping[str, Any]) -> Chain:
        """Where each cached stage of ``manifest`` really ran; stops at the first broken one."""
        proofs: list[Proof] = []
        for entry in array_objects(manifest.get("commands")):
            source = hit_from(entry)
            if source is not None:
                stage = entry.get("id")
                found = self._follow(str(stage), _key(entry), source)
                if isinstance(found, str):
                    return Chain(
                        tuple(proofs), f"stage {stage} was served from the stage cache: {found}"
                    )
                proofs.append(found)
        return Chain(tuple(proofs), None)

    def _follow(self, stage_id: str, key: object, source: tuple[str, str | None]) -> Proof | str:
        """The run that started stage ``stage_id`` (cache key ``key``), reached from the hit's
        ``source`` (run, task); else what breaks the chain."""
        for _ in range(MAX_LINKS):
            run_id, task = source
            if not is_valid_id(run_id) or (task is not None and not is_valid_id(task)):
                return f"it names {run_id!r}, which is not a run id"
            found = self._locate(run_id, task)
            if isinstance(found, str):
                return found
            proof = Proof(stage_id, run_id, found[0] / MANIFEST_NAME, found[1])
            try:
                ran = load_manifest(proof.manifest)
            except OrchestratorError:
                return f"the manifest of run {run_id}, which ran it, cannot be read"
            matches = [
                item for item in array_objects(ran.get("commands")) if item.get("id") == stage_id
            ]
            if not matches:
                return f"run {run_id} has no stage {stage_id}"
            entry = matches[0]
            if entry.get("status") != StageStatus.SUCCEEDED or entry.get("exit_code") != 0:
                return f"run {run_id} did not succeed in stage {stage_id}"
            if _key(entry) != key:
                return f"run {run_id} ran stage {stage_id} on other inputs (another cache key)"
            next_source = hit_from(entry)
            if next_source is None:
                return proof  # this run started the stage
            source = next_source
        return f"more than {MAX_LINKS} runs in a row name one another"

    def _locate(self, run_id: str, task: str | None) -> tuple[Path, Path | None] | str:
        """The directory of run ``run_id`` and the other worktree holding it (None: here)."""
        workspace = self.workspace
        found = workspace.find_run(run_id, task) or workspace.find_run(run_id)
        if found is not None:
            return found[1], None
        if self._others is None:  # git and its module only when a run is not here
            from codex_orchestrator.evidence.worktree_runs import OtherWorktrees

            self._others = OtherWorktrees(workspace)
        elsewhere = self._others.find_run(run_id, task)
        if elsewhere is not None:
            return elsewhere.run_dir, elsewhere.worktree
        here = workspace.display(workspace.runs_dir)
        return (
            f"run {run_id}, which ran it, no longer exists "
            f"(looked in {here} and in {self._others.looked_in()})"
        )


def _key(entry: Mapping[str, Any]) -> object:
    field = cache_of(entry)
    return field.get("key") if field is not None else None
