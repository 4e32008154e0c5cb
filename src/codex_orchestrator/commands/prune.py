"""``codex-orchestrator prune``: delete directories of old finished runs, keeping history.

See ``docs/run-control.md``: what is never deleted (live runs, evidence, children of kept
runs) and how ``state.json`` entries are marked ``"pruned": true``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from codex_orchestrator.commands.invocation import config_settings, settings_or_defaults
from codex_orchestrator.errors import LockTimeoutError, OutsideRootError, UsageError
from codex_orchestrator.persistence.prune import (
    Candidate,
    Criteria,
    candidates,
    decide,
    directory_bytes,
    left_aside,
    mark_pruned,
    set_aside,
    take_driver,
)
from codex_orchestrator.persistence.runs import TaskHistory, task_ids
from codex_orchestrator.records.driver import DriverLock
from codex_orchestrator.records.statuses import TERMINAL_RUN_STATUSES
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter, note
from codex_orchestrator.util.durations import parse_age
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.numeric import parse_count
from codex_orchestrator.util.safefs import remove_tree
from codex_orchestrator.util.wording import plural

#: Leftovers of killed stage cache stores older than this are removed.
PARTIAL_STORE_SECONDS = 3600
#: Why a chosen run stayed after all (a `kept` reason).
DRIVEN = "driven by another process (its driver lock is held)"


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Choose, report and (unless ``--dry-run``) delete; exit 0 (2 on bad input)."""
    workspace = Workspace.from_env()
    criteria = _criteria(args)
    tasks = (
        [validate_id(args.task, "task")]
        if args.task
        else task_ids(workspace.runs_dir, workspace.out_dir)
    )
    cited: dict[str, str] = {}
    if not criteria.include_evidence:
        from codex_orchestrator.evidence.citations import cited_runs

        cited = cited_runs(workspace.root)
    eviction, cache_cited = _cache_upkeep(workspace, dry_run=bool(args.dry_run))
    histories = {task: TaskHistory(workspace, task, note) for task in tasks}
    runs = [run for history in histories.values() for run in candidates(history, note)]
    decision = decide(runs, criteria, cited, lambda run_id: _exists(workspace, run_id), cache_cited)
    kept = dict(decision.kept)
    removed = [(run, directory_bytes(run.run_dir)) for run in decision.remove]
    if not args.dry_run:
        removed = _remove(workspace, histories, removed, kept)
    freed = sum(size for _, size in removed)
    document: dict[str, Any] = {
        "dry_run": bool(args.dry_run),
        "removed": [
            {
                "run_id": run.run_id,
                "task_id": run.task_id,
                "pipeline_id": run.pipeline_id,
                "status": run.status,
                "bytes": size,
            }
            for run, size in removed
        ],
        "bytes_freed": freed,
        "kept": [
            {"run_id": run_id, "reason": reason}
            for run_id, reason in kept.items()
            if reason not in ("newest", "status", "recent")
        ],
    }
    document["cache"] = eviction
    reporter.result(document, render(document))
    return 0


def _cache_upkeep(workspace: Workspace, *, dry_run: bool) -> tuple[dict[str, Any], frozenset[str]]:
    """Evict stage cache entries down to ``cache_max_bytes`` (least recently used first; not
    in a dry run) and clear what killed stores left; then the runs the kept entries cite."""
    from codex_orchestrator.cache.location import cache_dir
    from codex_orchestrator.cache.store import CacheStore

    settings = config_settings(workspace)
    store = CacheStore(cache_dir(workspace, settings), workspace.root)
    evicted: list[dict[str, Any]] = []
    freed = 0
    if not dry_run:
        store.sweep_partial(PARTIAL_STORE_SECONDS)
        eviction = store.evict(settings_or_defaults(workspace).cache_max_bytes)
        evicted = [
            {"key": e.key, "from_run": e.from_run, "bytes": e.size} for e in eviction.removed
        ]
        freed = eviction.freed_bytes
    return {"evicted": evicted, "bytes_freed": freed}, store.cited_runs()


def _criteria(args: argparse.Namespace) -> Criteria:
    keep = parse_count(args.keep, "--keep") if args.keep is not None else None
    older = parse_age(args.older_than, "--older-than") if args.older_than else None
    statuses = None
    if args.status is not None:
        statuses = frozenset(part.strip() for part in args.status.split(","))
        unknown = sorted(statuses - {str(status) for status in TERMINAL_RUN_STATUSES})
        if unknown:
            raise UsageError(
                f"--status {args.status!r}: {unknown[0]!r} is not a finished status; choose "
                f"from {', '.join(sorted(TERMINAL_RUN_STATUSES))}"
            )
    if keep is None and older is None and statuses is None:
        raise UsageError(
            "prune needs at least one of --keep N, --older-than AGE or --status S "
            "(add --dry-run to see what would go)"
        )
    return Criteria(keep, older, statuses, bool(args.include_evidence))


def _exists(workspace: Workspace, run_id: str) -> bool:
    """Whether a run has a directory under any task; a task directory that links out of the
    runs root counts as holding it (when in doubt, keep)."""
    try:
        return workspace.find_run(run_id) is not None
    except OutsideRootError:
        return True


def _remove(
    workspace: Workspace,
    histories: dict[str, TaskHistory],
    chosen: list[tuple[Candidate, int]],
    kept: dict[str, str],
) -> list[tuple[Candidate, int]]:
    """Take each run's driver lock and set the run aside, mark the history entries under the
    state lock, then delete the directories and let the locks go (see `pruning`)."""
    settings = settings_or_defaults(workspace)
    leftovers = [pair for history in histories.values() for pair in left_aside(history)]
    held: list[DriverLock] = []
    done: list[tuple[Candidate, int, Path]] = []
    try:
        for run, size in chosen:
            hidden = _set_aside_driven(run, run.run_dir, held, kept)
            if hidden is not None:
                done.append((run, size, hidden))
        for run, hidden in leftovers:  # another prune may be finishing it: its lock says so
            if _set_aside_driven(run, hidden, held, kept, already=hidden) is not None:
                done.append((run, directory_bytes(hidden), hidden))
        marked = []
        for task, history in histories.items():
            runs = [run for run, _, _ in done if run.task_id == task]
            try:
                if runs:
                    mark_pruned(workspace, settings, task, runs, history, note)
            except LockTimeoutError as error:
                note(f"warning: task {task}: {error}; its runs stay set aside for the next prune")
                kept.update(dict.fromkeys((run.run_id for run in runs), "state lock busy"))
                continue
            marked += [item for item in done if item[0].task_id == task]
        for _, _, hidden in marked:
            try:
                remove_tree(hidden)
            except OSError as error:
                note(f"warning: {workspace.display(hidden)} not fully removed ({error})")
    finally:
        for lock in held:
            lock.release()
    return [(run, size) for run, size, _ in marked]


def _set_aside_driven(
    run: Candidate,
    directory: Path,
    held: list[DriverLock],
    kept: dict[str, str],
    already: Path | None = None,
) -> Path | None:
    """Take the driver lock of the run in ``directory`` (kept into ``held``) and set the run
    aside (unless ``already`` aside); None, with the reason in ``kept``, when it stays."""
    lock = take_driver(directory)
    if lock is None:
        if os.path.lexists(directory):  # else another prune removed it meanwhile
            kept[run.run_id] = DRIVEN
        return None
    held.append(lock)
    hidden = already or set_aside(run)
    if hidden is None:
        kept[run.run_id] = "live"
    return hidden


def render(document: dict[str, Any]) -> str:
    """Text form: each removed run, what was kept and why, and the bytes freed."""
    verb = "would remove" if document["dry_run"] else "removed"
    lines = [
        f"{verb} {run['run_id']} [task {run['task_id']}, {run['pipeline_id']}, {run['status']}] "
        f"{_size(run['bytes'])}"
        for run in document["removed"]
    ]
    lines += [f"kept {item['run_id']}: {item['reason']}" for item in document["kept"]]
    count, size = len(document["removed"]), _size(document["bytes_freed"])
    evicted = document["cache"]["evicted"]
    if evicted:
        lines.append(
            f"stage cache: {len(evicted)} entries evicted, {_size(document['cache']['bytes_freed'])}"
            " freed"
        )
    if document["dry_run"]:
        runs = plural(count, "run")
        lines.append(f"dry run: {runs} would be removed, freeing {size}; nothing changed")
    else:
        lines.append(f"{plural(count, 'run')} removed, {size} freed")
    return "\n".join(lines)


def _size(count: int) -> str:
    value, unit = float(count), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
