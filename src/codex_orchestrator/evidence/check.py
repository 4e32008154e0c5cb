"""``tasks check``: what is wrong with tasks' checklists, their evidence and their collateral.

For each task: ``[x]`` items that cite no manifest; cited manifests that do not exist, do not
parse, belong to another task or whose run did not succeed; mirrors that are missing or
disagree (an item missing from one, checked in one and not another); files named by the
index that are missing or do not mention the task. Each file, manifest and collateral text is
read once however many tasks refer to it.

A cited manifest is also checked against the task's committed evidence record
(`evidence_record`): present, its facts must be the recorded ones; absent (a fresh clone: run
directories are not committed), a whole record of a succeeded run stands in for it, and the
report says so in a note (not a problem).

A cited run whose stages were cache hits proves them through the runs that really ran them
(`cache_chain`): a chain that does not lead to one is a problem; one that ends in another
worktree of the repository is a note naming that run's manifest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

from codex_orchestrator.errors import OutsideRootError, UnsafeInputError, UsageError
from codex_orchestrator.evidence.cache_chain import CacheChains, Chain
from codex_orchestrator.evidence.checklist import Item
from codex_orchestrator.evidence.evidence_record import (
    EVIDENCE_DIR,
    entry_problem,
    load_record,
    mismatch,
    record_path,
)
from codex_orchestrator.evidence.mirrors import (
    FileCache,
    MirrorView,
    TaskFiles,
    discover_tasks,
    load_mirror,
    mentions,
    mirror_templates,
    resolve_task,
    task_files,
)
from codex_orchestrator.evidence.taskindex import TaskIndex, load_index
from codex_orchestrator.pipelines.model import INDEX_PATH
from codex_orchestrator.records.statuses import RunStatus
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.jsonio import loads_checked
from codex_orchestrator.util.safefs import (
    RECORD_SIZE_LIMIT,
    TEXT_SIZE_LIMIT,
    read_inside,
    read_regular,
)
from codex_orchestrator.util.wording import status_text

#: A manifest (its JSON object), or the (kind, reason) of why it is unusable.
_ManifestFacts = dict[str, Any] | tuple[str, str]
#: The kind of a finding that is a note, not a problem: evidence vouched for by the record.
NOTE_FROM_RECORD = "evidence-from-record"
#: The kind of a note on evidence whose cached stages ran in another worktree (named there).
NOTE_OTHER_WORKTREE = "evidence-from-worktree"
NOTE_KINDS = frozenset({NOTE_FROM_RECORD, NOTE_OTHER_WORKTREE})
#: Findings about the evidence record (reported on the record's file, once).
RECORD_KINDS = frozenset({NOTE_FROM_RECORD, "evidence-record-invalid", "evidence-record-mismatch"})
#: An evidence record's entries by item, or why it is unusable.
_Record = dict[str, dict[str, Any]] | str | None


@dataclass(frozen=True)
class Problem:
    """One finding, located by file (relative to the root) and 1-based line when it has one."""

    file: str
    line: int | None
    kind: str
    message: str
    item: str | None = None
    evidence: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The problem as a JSON object."""
        return asdict(self)

    def as_text(self) -> str:
        """``file:line: message``."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class TaskReport:
    """The problems of one task, sorted by file and line."""

    task: str
    problems: tuple[Problem, ...]
    notes: tuple[Problem, ...] = ()


def check_tasks(workspace: Workspace, name: str | None) -> list[TaskReport]:
    """Check the task ``name`` designates, or every task of the index and mirror files."""
    root = workspace.root
    index = load_index(root)
    templates = mirror_templates(root)
    if name is not None:
        tasks = [resolve_task(root, index, templates, name)]
    else:
        ids = {entry.task_id for entry in index.entries} if index else set()
        ids |= discover_tasks(root, templates)
        tasks = [
            task_files(templates, task, index.entry(task) if index else None)
            for task in sorted(ids)
        ]
    checker = _Checker(workspace, index)
    return [checker.check(files) for files in tasks]


class _Checker:
    """Checks tasks one by one, sharing the files it has read between them."""

    def __init__(self, workspace: Workspace, index: TaskIndex | None) -> None:
        self.workspace = workspace
        self.root = workspace.root
        self.index = index
        self.files: FileCache = {}
        self.manifests: dict[str, _ManifestFacts] = {}
        self.chains = CacheChains(workspace)
        self.followed: dict[str, Chain] = {}
        self.texts: dict[str, tuple[bool, str | None]] = {}
        self.recorded: frozenset[str] | None = None

    def check(self, files: TaskFiles) -> TaskReport:
        views = [
            load_mirror(self.root, mirror, files.names, self.files) for mirror in files.mirrors
        ]
        present = [view for view in views if view.absent is None]
        record = self._record(files.task_id)
        found = [
            *_absent_mirrors(views, files.task_id),
            *(
                finding
                for view in present
                for finding in self._evidence(view, files.task_id, record)
            ),
            *(_disagreements(present) if len(present) > 1 else ()),
            *self._collateral(files),
        ]
        if isinstance(record, str):
            found.append(
                Problem(record_path(files.task_id), None, "evidence-record-unreadable", record)
            )
        found = list(dict.fromkeys(found))  # a record's finding comes from every mirror
        found.sort(key=lambda problem: (problem.file, problem.line or 0))
        problems = tuple(problem for problem in found if problem.kind not in NOTE_KINDS)
        notes = tuple(problem for problem in found if problem.kind in NOTE_KINDS)
        return TaskReport(files.task_id, problems, notes)

    def _record(self, task: str) -> _Record:
        """The task's evidence record (None without one); its problem as text when unusable.

        The records present are listed once: a thousand tasks without one cost one listing.
        """
        if self.recorded is None:
            try:
                self.recorded = frozenset(os.listdir(self.root / EVIDENCE_DIR))
            except OSError:
                self.recorded = frozenset()
        if f"{task}.json" not in self.recorded:
            return None
        try:
            return load_record(self.root, task)
        except (UsageError, OutsideRootError) as error:
            return error.message

    def _evidence(self, view: MirrorView, task: str, record: _Record) -> Iterator[Problem]:
        for item in view.items:
            label = f"{_box(item)} item '{item.identity}'"
            if item.checked and not item.evidence:
                yield Problem(
                    view.mirror.path,
                    item.line,
                    "no-evidence",
                    f"{label} cites no manifest.json; mark it with: "
                    f"codex-orchestrator tasks mark {task} '{item.identity}' --run RUN",
                    item.identity,
                )
            entry = record.get(item.identity) if isinstance(record, dict) else None
            for path in item.evidence:
                issue = self._manifest_issue(path, task, entry)
                if issue is None:
                    continue
                kind, reason = issue
                if kind in RECORD_KINDS:  # about the record: said once, however many mirrors
                    yield Problem(
                        record_path(task),
                        None,
                        kind,
                        f"item '{item.identity}' cites {path}, {reason}",
                        item.identity,
                        path,
                    )
                else:
                    yield Problem(
                        view.mirror.path,
                        item.line,
                        kind,
                        f"{label} cites {path}, {reason}",
                        item.identity,
                        path,
                    )

    def _manifest_issue(
        self, path: str, task: str, entry: dict[str, Any] | None
    ) -> tuple[str, str] | None:
        manifest = self.manifests.get(path)
        if manifest is None:
            manifest = self.manifests[path] = _read_manifest(self.workspace, path)
        if entry is not None and entry.get("run_id") != PurePosixPath(path).parent.name:
            entry = None  # the record speaks of another run the item cites
        if isinstance(manifest, tuple):
            if manifest[0] != "evidence-not-found" or entry is None:
                return manifest
            problem = entry_problem(entry, task)
            if problem is None:
                return NOTE_FROM_RECORD, (
                    f"absent here (run directories are not committed); the evidence record "
                    f"vouches for it: run {entry.get('run_id')} of pipeline {entry.get('pipeline_id')} "
                    f"succeeded at {entry.get('completed_at')}"
                )
            return "evidence-record-invalid", (
                f"which is absent, and its evidence record {problem}; "
                f"re-mark the item with a succeeded run: codex-orchestrator tasks mark {task} "
                f"'{entry.get('item')}' --run RUN"
            )
        chain = self.followed.get(path)
        if chain is None:
            chain = self.followed[path] = self.chains.follow(manifest)
        if chain.broken is not None:
            return "evidence-cache-chain", f"a run that proves nothing ({chain.broken})"
        owner, status, detail = (
            manifest["task_id"],
            manifest.get("status"),
            manifest.get("status_detail"),
        )
        if owner != task:
            return "evidence-wrong-task", f"a run of task {owner}, not {task}"
        if status != RunStatus.SUCCEEDED:
            outcome = status_text(status, detail)
            return "evidence-not-succeeded", f"a run that is {outcome}, not succeeded"
        if entry is not None:
            differs = entry_problem(entry, task) or mismatch(entry, manifest)
            if differs is not None:
                return "evidence-record-mismatch", (
                    f"and the evidence record does not match that manifest: {differs}; "
                    f"re-mark the item: codex-orchestrator tasks mark {task} "
                    f"'{entry.get('item')}' --run {entry.get('run_id')}"
                )
        elsewhere = [proof for proof in chain.proofs if proof.worktree is not None]
        if elsewhere:
            return NOTE_OTHER_WORKTREE, "whose cached stages ran in another worktree: " + "; ".join(
                f"stage {proof.stage} in run {proof.run_id}, {proof.manifest}"
                for proof in elsewhere
            )
        return None

    def _collateral(self, files: TaskFiles) -> Iterator[Problem]:
        if files.entry is None:
            if self.index is not None:
                yield Problem(
                    INDEX_PATH, None, "not-in-index", f"has no entry for task {files.task_id}"
                )
            return
        mirrors = {mirror.path for mirror in files.mirrors}
        for field, path in files.entry.collateral.items():
            if path in mirrors:
                continue
            named = f"named by {INDEX_PATH} ({field} of task {files.task_id})"
            exists, text = self._read_text(path)
            if not exists:
                yield Problem(path, None, "collateral-missing", f"{named} does not exist")
            elif text is not None and not any(mentions(text, name) for name in files.names):
                unnamed = f"{named} does not mention {' or '.join(files.names)}"
                yield Problem(path, None, "collateral-unrelated", unnamed)

    def _read_text(self, path: str) -> tuple[bool, str | None]:
        """Whether a collateral path exists, and its text (None for a directory or unreadable)."""
        if path not in self.texts:
            try:
                raw = read_inside(self.root, path, TEXT_SIZE_LIMIT)
                self.texts[path] = True, raw.decode("utf-8", "replace")
            except FileNotFoundError:
                self.texts[path] = False, None
            except (OSError, OutsideRootError):
                self.texts[path] = True, None
        return self.texts[path]


def _absent_mirrors(views: list[MirrorView], task: str) -> Iterator[Problem]:
    """One problem per mirror that holds no checklist of the task."""
    for view in views:
        if view.absent is not None:
            message = f"checklist mirror of task {task} {view.absent}"
            yield Problem(view.mirror.path, None, "mirror-missing", message)


def _disagreements(views: list[MirrorView]) -> Iterator[Problem]:
    """Items missing from a mirror, and items checked in one mirror but not in another."""
    tables: list[dict[str, Item]] = []
    for view in views:
        table: dict[str, Item] = {}
        for item in view.items:
            table.setdefault(item.identity, item)
        tables.append(table)
    identities = dict.fromkeys(identity for table in tables for identity in table)
    for identity in identities:
        holders = [
            (view, table[identity])
            for view, table in zip(views, tables, strict=True)
            if identity in table
        ]
        first_view, first_item = holders[0]
        where = f"{first_view.mirror.path}:{first_item.line}"
        for view, table in zip(views, tables, strict=True):
            if identity not in table:
                yield Problem(
                    view.mirror.path,
                    view.heading.line if view.heading else None,
                    "mirror-item-missing",
                    f"item '{identity}' is missing here (it is at {where})",
                    identity,
                )
        checked = next(((view, item) for view, item in holders if item.checked), None)
        if checked is None:
            continue
        for view, item in holders:
            if not item.checked:
                yield Problem(
                    view.mirror.path,
                    item.line,
                    "mirror-state-mismatch",
                    f"[ ] item '{identity}' is [x] in {checked[0].mirror.path}:{checked[1].line}",
                    identity,
                )


def _read_manifest(workspace: Workspace, path: str) -> _ManifestFacts:
    """A cited manifest, or why it cannot be used. It may lie outside the repository (a runs root set by
    ``CODEX_ORCHESTRATOR_RUNS_DIR`` is cited by its absolute path): reading it is capped and
    refuses anything but a regular file."""
    try:
        data = loads_checked(read_regular(workspace.root / path, RECORD_SIZE_LIMIT), path)
    except FileNotFoundError:
        return "evidence-not-found", "which does not exist"
    except OSError as error:
        return "evidence-unreadable", f"which cannot be read ({error.strerror})"
    except UnsafeInputError:
        return "evidence-unreadable", "which is not valid JSON"
    if not isinstance(data, dict) or not isinstance(data.get("task_id"), str):
        return "evidence-unreadable", "which is not a run manifest (no task_id)"
    return data


def _box(item: Item) -> str:
    return "[x]" if item.checked else "[ ]"
