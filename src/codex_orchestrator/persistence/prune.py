"""Choosing and deleting old run directories while keeping every run's history.

A run is deleted only when it has ended (terminal manifest), matches every criterion given,
is not cited as evidence (unless told), is not the child of a run that stays (in any task, or
whose manifest cannot be read), and its driver lock (``.driver.lock``) can be taken: a run
some process drives (``resume``, a finishing driver, another prune) is left alone, and the
lock is held until its directory is gone. The directory is first renamed to a hidden name in
the same ``cli`` directory (one atomic step); then the run's ``state.json`` entry is marked
``"pruned": true`` under the task's state lock (`TaskStateStore.mark_pruned`, after every
pending snapshot is merged, and sticky, so a finishing run's snapshot cannot undo it); then the
directory is removed. ``metrics.json`` is never touched. Every access goes through `safefs`:
no link is followed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.persistence.runs import TaskHistory, read_manifest
from codex_orchestrator.persistence.state_format import StateEntry
from codex_orchestrator.persistence.task_state import RunRecord, TaskStateStore
from codex_orchestrator.records.driver import DriverLock
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.statuses import TERMINAL_RUN_STATUSES
from codex_orchestrator.records.workspace import Settings, Workspace
from codex_orchestrator.util.clock import parse_iso_utc
from codex_orchestrator.util.ids import RUN_ID_PATTERN
from codex_orchestrator.util.safefs import list_directory, open_parent, rename_no_follow

#: A finished run missing from the history this long after it ended will never be recorded
#: by its own process (killed while recording); prune records it itself.
RECORDING_GRACE_SECONDS = 60.0

#: Why a run a kept stage cache entry names is never pruned (docs/cache.md).
CACHE_CITED = "cited by the stage cache (evict its entries first: cache_max_bytes)"


class Criteria(NamedTuple):
    """What to prune: keep the N newest per pipeline, older than an age, of some statuses."""

    keep: int | None
    older_than_seconds: float | None
    statuses: frozenset[str] | None
    include_evidence: bool


class Candidate(NamedTuple):
    """A run on disk and the facts that decide its fate."""

    task_id: str
    run_id: str
    run_dir: Path
    pipeline_id: str
    status: str
    completed_at: str | None
    parent_run_id: str | None
    recorded: bool


class Decision(NamedTuple):
    """Runs to delete and runs kept for a reason (``reason`` by run id)."""

    remove: list[Candidate]
    kept: dict[str, str]


_ASIDE = re.compile(r"\.pruning-(" + RUN_ID_PATTERN.pattern + r")-[0-9a-f]{6}")


def _candidate(
    task_id: str, run_id: str, run_dir: Path, manifest: dict[str, Any], recorded: bool
) -> Candidate:
    parent = manifest.get("parent_run_id")
    completed = manifest.get("completed_at")
    return Candidate(
        task_id,
        run_id,
        run_dir,
        str(manifest["pipeline_id"]),
        str(manifest["status"]),
        completed if isinstance(completed, str) else None,
        parent if isinstance(parent, str) else None,
        recorded,
    )


def left_aside(history: TaskHistory) -> list[tuple[Candidate, Path]]:
    """Runs an interrupted prune set aside but did not finish removing (their hidden
    directories), so that this prune marks and removes them. Call it before setting any run
    aside: this prune's own hidden directories are not left over."""
    try:
        names = list_directory(history.cli_dir)
    except OSError:
        return []
    found = []
    for name in names:
        match = _ASIDE.fullmatch(name)
        manifest = read_manifest(history.cli_dir / name) if match else None
        if match and manifest is not None:
            run_id = match.group(1)
            found.append(
                (
                    _candidate(history.task_id, run_id, history.run_dir(run_id), manifest, True),
                    history.cli_dir / name,
                )
            )
    return found


def candidates(history: TaskHistory, warn: Callable[[str], None]) -> list[Candidate]:
    """Every run directory of the task whose manifest can be read, newest first."""
    found = []
    recorded = set(history.recorded()[0])
    on_disk = history.on_disk()
    if on_disk - recorded:
        recorded.update(history.archived())
    for run_id in sorted(on_disk, reverse=True):
        run_dir = history.run_dir(run_id)
        manifest = read_manifest(run_dir)
        if manifest is None:
            warn(f"warning: run {run_id}: no readable manifest; left alone")
            continue
        found.append(_candidate(history.task_id, run_id, run_dir, manifest, run_id in recorded))
    return found


def decide(
    runs: list[Candidate],
    criteria: Criteria,
    cited: dict[str, str],
    run_exists: Callable[[str], bool],
    cache_cited: frozenset[str] = frozenset(),
) -> Decision:
    """Apply the criteria and the protections to ``runs`` (newest first).

    ``cache_cited``: runs that kept stage cache entries name (a hit's evidence ends there),
    kept whatever the criteria say.

    ``run_exists(run_id)`` says whether a run has a directory under any task (readable manifest
    or not): a child whose parent exists and is not removed too is kept.
    """
    kept: dict[str, str] = {}
    remove: dict[str, Candidate] = {}
    seen_per_pipeline: dict[tuple[str, str], int] = {}
    cutoff = time.time() - criteria.older_than_seconds if criteria.older_than_seconds else None
    for run in runs:
        if run.status not in TERMINAL_RUN_STATUSES:
            kept[run.run_id] = "live"
            continue
        if not run.recorded and not _ended_before(run, time.time() - RECORDING_GRACE_SECONDS):
            kept[run.run_id] = "live"  # its history entry is being written right now
            continue
        group = (run.task_id, run.pipeline_id)
        seen_per_pipeline[group] = seen_per_pipeline.get(group, 0) + 1
        if criteria.keep is not None and seen_per_pipeline[group] <= criteria.keep:
            kept[run.run_id] = "newest"
        elif criteria.statuses is not None and run.status not in criteria.statuses:
            kept[run.run_id] = "status"
        elif cutoff is not None and not _ended_before(run, cutoff):
            kept[run.run_id] = "recent"
        elif run.run_id in cache_cited:
            kept[run.run_id] = CACHE_CITED
        elif run.run_id in cited and not criteria.include_evidence:
            kept[run.run_id] = f"evidence in {cited[run.run_id]}"
        else:
            remove[run.run_id] = run
    exists: dict[str, bool] = {}
    changed = True
    while changed:  # a kept run keeps its children, whose own children stay with them
        changed = False
        for run_id, run in list(remove.items()):
            parent = run.parent_run_id
            if parent is None or parent in remove:
                continue
            if parent not in exists:
                exists[parent] = run_exists(parent)
            if exists[parent]:
                kept[run_id] = f"child of kept run {run.parent_run_id}"
                del remove[run_id]
                changed = True
    return Decision(list(remove.values()), kept)


def _ended_before(run: Candidate, cutoff: float) -> bool:
    moment = parse_iso_utc(run.completed_at) if run.completed_at else None
    return moment is not None and moment < cutoff


def directory_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (no link followed, above it or inside it)."""
    try:
        parent, name = open_parent(path)
    except OSError:
        return 0
    total = 0
    try:
        for _, _, files, directory in os.fwalk(name, dir_fd=parent):
            for file_name in files:
                try:
                    total += os.lstat(file_name, dir_fd=directory).st_size
                except OSError:
                    continue
    finally:
        os.close(parent)
    return total


def mark_pruned(
    workspace: Workspace,
    settings: Settings,
    task_id: str,
    runs: Iterable[Candidate],
    history: TaskHistory,
    warn: Callable[[str], None],
) -> None:
    """Record ``"pruned": true`` in each run's state entry, under the state store's lock.

    A run missing from ``state.json`` gets its archived entry, else one made from its manifest.
    Raises `LockTimeoutError` when the lock bound is spent (nothing is marked).
    """
    recorded, _ = history.recorded()
    archived: dict[str, StateEntry] | None = None
    entries: list[StateEntry] = []
    for run in runs:
        found = recorded.get(run.run_id)
        if found is None:
            archived = history.archived() if archived is None else archived
            found = archived.get(run.run_id)
        entries.append(found or _entry_from_manifest(workspace, run))
    TaskStateStore.for_task(workspace, settings, task_id, warn).mark_pruned(entries)


def _entry_from_manifest(workspace: Workspace, run: Candidate) -> StateEntry:
    """A state entry for a finished run whose snapshot never reached the history."""
    return RunRecord(
        run.task_id,
        run.run_id,
        run.pipeline_id,
        run.status,
        run.completed_at or "",
        workspace.display(RunLayout(run.run_dir).manifest),
    ).to_json()


def take_driver(run_dir: Path) -> DriverLock | None:
    """The run's driver lock, held by this process; None while another process holds it (or
    when it cannot be opened: a link or a FIFO in its place, a vanished directory)."""
    lock = DriverLock(run_dir)
    try:
        return lock if lock.acquire() else None
    except OSError:
        return None


def set_aside(run: Candidate) -> Path | None:
    """Rename the run's directory to a hidden name if its manifest still says it ended.

    The caller holds the run's driver lock. Returns the hidden path, or None when the run is
    live again or already gone.
    """
    manifest = read_manifest(run.run_dir)
    if manifest is None or manifest["status"] not in TERMINAL_RUN_STATUSES:
        return None
    hidden = run.run_dir.with_name(f".pruning-{run.run_id}-{os.urandom(3).hex()}")
    try:
        rename_no_follow(run.run_dir, hidden)
    except OSError:
        return None
    return hidden
