"""``tasks new``: scaffold a task's index entry, checklist mirrors and document stubs.

Files (``{task}`` is the task id): the mirrors (see `mirrors`) with a starter checklist;
``docs/PRD-{task}.md``, ``docs/TECH_SPEC-{task}.md``, ``docs/ACTION_PLAN-{task}.md``; and
``tasks/specs/{task}.md`` carrying ``last_review: <today>`` for spec-guard. An existing file is
never overwritten: it is kept and reported, except that a shared mirror (``docs/TASKS.md``)
without a section for the task gets one appended, every previous byte kept. The index entry
(``id``, ``slug``, ``task_key``, ``title``, ``path``, ``status``, ``paths``) is added last;
``tasks/index.json`` is created when absent. A task already in the index is refused.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from codex_orchestrator.errors import OrchestratorError, UsageError
from codex_orchestrator.evidence.checklist import parse
from codex_orchestrator.evidence.mirrors import (
    Mirror,
    TaskFiles,
    mirror_templates,
    section_heading,
    task_files,
)
from codex_orchestrator.evidence.taskindex import TaskIndex, load_index
from codex_orchestrator.pipelines.model import INDEX_PATH
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.jsonio import atomic_write_bytes, atomic_write_json
from codex_orchestrator.util.safefs import TEXT_SIZE_LIMIT, read_regular, resolve_within

STARTER_ITEMS = (
    "Synchronize collateral — `tasks/index.json`, PRD, tech spec, action plan and spec "
    "reference Task {task}",
    "Run diagnostics — `codex-orchestrator start diagnostics --task {task}`",
    "Guardrails — `codex-orchestrator spec-guard`",
    "Reviewer hand-off — `codex-orchestrator review --task {task}`",
)
CHECKLIST = """# Task Checklist — {title} ({task})

> Export `MCP_RUNNER_TASK_ID={task}` before running orchestrator commands. Mirror status across \
{mirrors}. Flip an item to `[x]` only with the manifest of a succeeded run: \
`codex-orchestrator tasks mark {task} ITEM --run RUN`.

## Checklist
{items}"""
SECTION = "## {task} — {title}\n\n{items}"
STUBS = {
    "prd": (
        "docs/PRD-{task}.md",
        "# PRD — {title} ({task})\n\n## Problem\n\nTBD.\n\n## Goals\n\n- TBD\n\n"
        "## Non-goals\n\n- TBD\n\n## Success criteria\n\n- TBD\n",
    ),
    "tech_spec": (
        "docs/TECH_SPEC-{task}.md",
        "# Technical Spec — {title} ({task})\n\n## Approach\n\nTBD.\n\n## Interfaces\n\nTBD.\n\n"
        "## Testing\n\nTBD.\n",
    ),
    "action_plan": (
        "docs/ACTION_PLAN-{task}.md",
        "# Action Plan — {title} ({task})\n\n## Steps\n\n1. TBD\n\n## Risks\n\n- TBD\n",
    ),
    "spec": (
        "tasks/specs/{task}.md",
        "---\ntask: {task}\ntitle: {quoted_title}\nlast_review: {today}\n---\n\n"
        "# Spec — {title} ({task})\n\n## Requirements\n\n- TBD\n",
    ),
}
_NUMBERED = re.compile(r"(\d+)-(.+)")


@dataclass
class ScaffoldResult:
    """What ``tasks new`` did (paths relative to the root)."""

    task: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def scaffold(root: Path, task: str, title: str, today: date | None = None) -> ScaffoldResult:
    """Create task ``task``'s collateral and index entry; never overwrite a file."""
    validate_id(task, "task")
    title = title.strip()
    if not title or "\n" in title or "\r" in title:
        raise UsageError(f"--title {title!r}: give a non-empty, one-line title")
    numbered = _NUMBERED.fullmatch(task)
    number, slug = numbered.groups() if numbered else (task, task)
    _refuse_existing(load_index(root), task, number)
    files = task_files(mirror_templates(root), task, None)
    stubs = [path.format(task=task) for path, _ in STUBS.values()]
    for path in [*(mirror.path for mirror in files.mirrors), *stubs, INDEX_PATH]:
        _target(root, path)  # refuse a link out of the repository before creating anything
    values = {
        "task": task,
        "title": title,
        "quoted_title": json.dumps(title, ensure_ascii=False),
        "today": (today or date.today()).isoformat(),
        "items": "".join(f"- [ ] {item.format(task=task)}\n" for item in STARTER_ITEMS),
        "mirrors": ", ".join(f"`{mirror.path}`" for mirror in files.mirrors),
    }
    result = ScaffoldResult(task)
    for mirror in files.mirrors:
        if mirror.shared:
            _add_section(root, mirror, files, values, result)
        else:
            _create(root, mirror.path, CHECKLIST.format(**values), result)
    paths = _mirror_paths(files) | {
        key: _create(root, path.format(task=task), text.format(**values), result)
        for key, (path, text) in STUBS.items()
    }
    entry = {
        "id": number,
        "slug": slug,
        "task_key": task,
        "title": title,
        "path": paths.get("task"),
        "status": "pending",
        "paths": paths,
    }
    _add_entry(root, {key: value for key, value in entry.items() if value is not None}, result)
    return result


def _refuse_existing(index: TaskIndex | None, task: str, number: str) -> None:
    if index is None:
        return
    for name in (task, number):
        clash = index.matches(name)
        if clash:
            raise UsageError(
                f"task {task}: {name} is already task {clash[0].task_id} in {INDEX_PATH}; "
                "choose another task id"
            )


def _mirror_paths(files: TaskFiles) -> dict[str, str]:
    """Index ``paths`` for the per-task mirrors: ``agent_task`` under ``.agent/``, else ``task``."""
    paths: dict[str, str] = {}
    for mirror in files.mirrors:
        if not mirror.shared:
            paths.setdefault(
                "agent_task" if mirror.path.startswith(".agent/") else "task", mirror.path
            )
    return paths


def _create(root: Path, path: str, text: str, result: ScaffoldResult) -> str:
    """Create ``path`` with ``text`` unless something exists there; record which; return it."""
    target = _target(root, path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        temp.write_bytes(text.encode("utf-8"))
        try:
            os.link(temp, target)
            result.created.append(path)
        except FileExistsError:
            result.kept.append(path)
        finally:
            temp.unlink()
    except OSError as error:
        raise OrchestratorError(
            f"{path}: cannot create ({error.strerror}); check the directory"
        ) from None
    return path


def _add_section(
    root: Path, mirror: Mirror, files: TaskFiles, values: dict[str, str], result: ScaffoldResult
) -> None:
    """Append the task's section to a shared mirror (creating the file when absent)."""
    target = _target(root, mirror.path)
    section = SECTION.format(**values)
    try:
        data = read_regular(target, TEXT_SIZE_LIMIT)
    except FileNotFoundError:
        _create(root, mirror.path, f"# Tasks\n\n{section}", result)
        return
    except OSError as error:
        raise OrchestratorError(f"{mirror.path}: cannot read ({error.strerror})") from None
    if section_heading(parse(data), files.names) is not None:
        result.kept.append(mirror.path)
        return
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    separator = (b"" if not data or data.endswith(b"\n") else newline) + (newline if data else b"")
    addition = section.replace("\n", newline.decode()).encode("utf-8")
    atomic_write_bytes(
        target, data + separator + addition, mode=stat.S_IMODE(target.stat().st_mode)
    )
    result.updated.append(mirror.path)


def _add_entry(root: Path, entry: dict[str, Any], result: ScaffoldResult) -> None:
    """Append ``entry`` to the index, re-read just before writing (created when absent)."""
    index = load_index(root)
    _refuse_existing(index, entry["task_key"], entry["id"])
    document: dict[str, Any] = index.document if index else {"items": []}
    document["items"].append(entry)
    path = _target(root, INDEX_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, document)
    (result.updated if index else result.created).append(INDEX_PATH)


def _target(root: Path, path: str) -> Path:
    """Where ``path`` really is; a link leading out of the repository is refused (exit 2)."""
    fix = "the tool never writes through a link that leaves the repository; remove the link"
    return resolve_within(root / path, root, path, fix)
