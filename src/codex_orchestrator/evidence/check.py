"""``tasks check``: what is wrong with tasks' checklists, their evidence and their collateral.

For each task: ``[x]`` items that cite no manifest; cited manifests that do not exist, do not
parse, belong to another task or whose run did not succeed; mirrors that are missing or
disagree (an item missing from one, checked in one and not another); files named by the
index that are missing or do not mention the task. Each file, manifest and collateral text is
read once however many tasks refer to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from codex_orchestrator.errors import OutsideRootError, UnsafeInputError
from codex_orchestrator.evidence.cache_chain import broken_chain
from codex_orchestrator.evidence.checklist import Item
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
from codex_orchestrator.evidence.taskindex import INDEX_PATH, TaskIndex, load_index
from codex_orchestrator.records.statuses import RunStatus
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.jsonio import loads_checked
from codex_orchestrator.util.safefs import (
    RECORD_SIZE_LIMIT,
    TEXT_SIZE_LIMIT,
    read_inside,
    read_regular,
)

#: A manifest's (task_id, status, status_detail), or the (kind, reason) of why it is unusable.
_ManifestFacts = tuple[str, str, str | None] | tuple[str, str]


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
        self.texts: dict[str, tuple[bool, str | None]] = {}

    def check(self, files: TaskFiles) -> TaskReport:
        views = [
            load_mirror(self.root, mirror, files.names, self.files) for mirror in files.mirrors
        ]
        present = [view for view in views if view.absent is None]
        problems = [
            *_absent_mirrors(views, files.task_id),
            *(problem for view in present for problem in self._evidence(view, files.task_id)),
            *(_disagreements(present) if len(present) > 1 else ()),
            *self._collateral(files),
        ]
        problems.sort(key=lambda problem: (problem.file, problem.line or 0))
        return TaskReport(files.task_id, tuple(problems))

    def _evidence(self, view: MirrorView, task: str) -> Iterator[Problem]:
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
            for path in item.evidence:
                issue = self._manifest_issue(path, task)
                if issue is not None:
                    kind, reason = issue
                    yield Problem(
                        view.mirror.path,
                        item.line,
                        kind,
                        f"{label} cites {path}, {reason}",
                        item.identity,
                        path,
                    )

    def _manifest_issue(self, path: str, task: str) -> tuple[str, str] | None:
        facts = self.manifests.get(path)
        if facts is None:
            facts = self.manifests[path] = _manifest_facts(self.workspace, path)
        if len(facts) == 2:
            return facts
        owner, status, detail = facts
        if owner != task:
            return "evidence-wrong-task", f"a run of task {owner}, not {task}"
        if status != RunStatus.SUCCEEDED:
            outcome = f"{status} ({detail})" if detail else status
            return "evidence-not-succeeded", f"a run that is {outcome}, not succeeded"
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


def _manifest_facts(workspace: Workspace, path: str) -> _ManifestFacts:
    """What a cited manifest says. It may lie outside the repository (a runs root set by
    ``CODEX_ORCHESTRATOR_RUNS_DIR`` is cited by its absolute path): reading it is capped and
    refuses anything but a regular file. A run whose cache hits do not lead to the runs that
    really ran them proves nothing."""
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
    broken = broken_chain(workspace, data)
    if broken is not None:
        return "evidence-cache-chain", f"a run that proves nothing ({broken})"
    detail = data.get("status_detail")
    return data["task_id"], str(data.get("status")), detail if isinstance(detail, str) else None


def _box(item: Item) -> str:
    return "[x]" if item.checked else "[ ]"
