"""``tasks mark``: flip one item to ``[x]`` in every mirror, citing a run that proves it.

The item is chosen by its identity or a unique prefix of it. The run must exist, belong to the
task and have succeeded (any other status, ``skipped`` included, is refused). Every mirror is
edited in memory before any is written; each write is atomic and keeps every other byte of the
file (line endings, missing final newline). The committed evidence record
(`evidence_record`, ``tasks/evidence/<task>.json``) is written first, so that evidence that
travels with a clone exists for every item marked.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field

from codex_orchestrator.errors import OrchestratorError, UsageError
from codex_orchestrator.evidence.cache_chain import CacheChains, Proof
from codex_orchestrator.evidence.checklist import fold, mark_items
from codex_orchestrator.evidence.evidence_record import write_entry
from codex_orchestrator.evidence.mirrors import (
    LINKED_MIRROR_FIX,
    MirrorView,
    load_mirror,
    mirror_templates,
    resolve_task,
)
from codex_orchestrator.evidence.taskindex import load_index
from codex_orchestrator.records.manifest import Manifest, load_manifest
from codex_orchestrator.records.run_layout import MANIFEST_NAME
from codex_orchestrator.records.runref import ResolvedRun, resolve_run
from codex_orchestrator.records.statuses import RunStatus
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.jsonio import atomic_write_bytes
from codex_orchestrator.util.safefs import resolve_within
from codex_orchestrator.util.wording import status_text

_LISTED_CANDIDATES = 12


@dataclass
class CachedStage:
    """A stage of the cited run served from the stage cache, and the run that really ran it:
    its manifest (relative to the root when inside it) and the other worktree holding it."""

    stage: str
    run_id: str
    manifest: str
    worktree: str | None

    @classmethod
    def of(cls, workspace: Workspace, proof: Proof) -> CachedStage:
        """The stage as `tasks mark` reports it."""
        worktree = str(proof.worktree) if proof.worktree is not None else None
        return cls(proof.stage, proof.run_id, workspace.display(proof.manifest), worktree)


@dataclass
class MarkResult:
    """What ``tasks mark`` did, file by file (paths relative to the root)."""

    task: str
    item: str
    run_id: str
    evidence: str
    record: str = ""
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    without_item: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    cached: list[CachedStage] = field(default_factory=list)


def mark(workspace: Workspace, task_name: str, query: str, run: str) -> MarkResult:
    """Mark the item ``query`` of task ``task_name`` done with the manifest of ``run`` (a run
    reference: ``@last`` is the task's newest run)."""
    root = workspace.root
    files = resolve_task(root, load_index(root), mirror_templates(root), task_name)
    # Refuse before anything is written; a link inside the repository is edited through (the
    # real file is replaced, the link stays a link), never replaced by a copy.
    targets = {
        mirror.path: resolve_within(root / mirror.path, root, mirror.path, LINKED_MIRROR_FIX)
        for mirror in files.mirrors
    }
    views = [load_mirror(root, mirror, files.names) for mirror in files.mirrors]
    present = [view for view in views if view.absent is None]
    identity = choose_item(present, query, files.task_id)
    proof = resolve_run(workspace, run, newest_of=files.task_id)
    evidence, manifest, proofs = proving_manifest(workspace, proof, files.task_id)
    result = MarkResult(files.task_id, identity, proof.run_id, evidence)
    result.cached = [CachedStage.of(workspace, cached) for cached in proofs]
    result.absent = [view.mirror.path for view in views if view.absent is not None]
    edits: list[tuple[str, bytes]] = []
    for view in present:
        items = [item for item in view.items if item.identity == identity]
        if not items or view.checklist is None:
            result.without_item.append(view.mirror.path)
            continue
        edited = mark_items(view.checklist, items, evidence)
        if edited == view.checklist.encode():
            result.unchanged.append(view.mirror.path)
        else:
            edits.append((view.mirror.path, edited))
    result.record = write_entry(root, files.task_id, identity, manifest)
    for path, data in edits:
        target = targets[path]
        atomic_write_bytes(target, data, mode=stat.S_IMODE(target.stat().st_mode))
        result.changed.append(path)
    return result


def choose_item(views: list[MirrorView], query: str, task: str) -> str:
    """The identity that ``query`` names: an exact identity, else a unique prefix of one."""
    if not views:
        raise UsageError(f"task {task} has no checklist to mark; create it with: tasks new {task}")
    wanted = fold(query)
    if not wanted:
        raise UsageError("the item is empty; give the start of the item's text")
    identities = list(dict.fromkeys(item.identity for view in views for item in view.items))
    if wanted in identities:
        return wanted
    candidates = [identity for identity in identities if identity.startswith(wanted)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise UsageError(f"item {query!r} is ambiguous in task {task}: {_listing(candidates)}")
    raise UsageError(f"no item of task {task} starts with {query!r}; items: {_listing(identities)}")


def proving_manifest(
    workspace: Workspace, run: ResolvedRun, task: str
) -> tuple[str, Manifest, tuple[Proof, ...]]:
    """The manifest (its path, its data) of ``run`` if it belongs to ``task`` and succeeded,
    and where its cached stages really ran (`CacheChains`)."""
    run_id, path = run.run_id, run.run_dir / MANIFEST_NAME
    manifest = load_manifest(path)
    owner, status = manifest.get("task_id"), manifest.get("status")
    if owner != task:
        raise OrchestratorError(
            f"run {run_id} belongs to task {owner}, not {task}; cite a run of task {task}"
        )
    if status != RunStatus.SUCCEEDED:
        outcome = status_text(status, manifest.get("status_detail"))
        raise OrchestratorError(
            f"run {run_id} is {outcome}, not succeeded; only a succeeded run proves an item"
        )
    chain = CacheChains(workspace).follow(manifest)
    if chain.broken is not None:
        raise OrchestratorError(
            f"run {run_id}: {chain.broken}; run it again with --no-cache and cite that run"
        )
    return workspace.display(path), manifest, chain.proofs


def _listing(identities: list[str]) -> str:
    shown = ", ".join(f"'{identity}'" for identity in identities[:_LISTED_CANDIDATES])
    hidden = len(identities) - _LISTED_CANDIDATES
    return shown + (f" and {hidden} more" if hidden > 0 else "")
