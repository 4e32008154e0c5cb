"""The checklist mirrors of a task, and how a task name on the command line resolves to a task.

Mirrors are path templates relative to the repository root, by default
``tasks/tasks-{task}.md``, ``.agent/task/{task}.md`` and ``docs/TASKS.md``. A template with
``{task}`` names a file holding the task's whole checklist. A template without it names a file
shared by all tasks, in which the task's checklist is the section under the first heading that
names the task (its id, else its index ``<id>``), up to the next heading of the same or a higher
level. An index entry's ``paths.task`` and ``paths.agent_task`` are mirrors too. Set the
templates in ``codex.orchestrator.json``::

    {"tasks": {"mirrors": ["tasks/tasks-{task}.md", "docs/TASKS.md"]}}
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from codex_orchestrator.errors import OutsideRootError, UsageError
from codex_orchestrator.evidence.checklist import Checklist, Heading, Item, parse
from codex_orchestrator.evidence.taskindex import IndexEntry, TaskIndex
from codex_orchestrator.pipelines.config import load_config
from codex_orchestrator.pipelines.model import INDEX_PATH
from codex_orchestrator.util.ids import is_valid_id, validate_id
from codex_orchestrator.util.safefs import (
    TEXT_SIZE_LIMIT,
    read_inside,
    resolve_within,
)

PLACEHOLDER = "{task}"
DEFAULT_MIRRORS = ("tasks/tasks-{task}.md", ".agent/task/{task}.md", "docs/TASKS.md")
MIRROR_PATH_KEYS = ("task", "agent_task")
LINKED_MIRROR_FIX = (
    "the tool neither reads nor edits a checklist through a link that leaves the repository; "
    "replace the link with the file itself"
)
_LEADING_NUMBER = re.compile(r"(\d+)-")
_ALNUM = frozenset(string.ascii_letters + string.digits)
_ID_CHARS = _ALNUM | {"_", "-"}

#: Parsed files by path, or why a file could not be read; shared by the mirrors of many tasks.
FileCache = dict[Path, Checklist | str]


@dataclass(frozen=True)
class Mirror:
    """A file that mirrors a task's checklist; ``shared`` when it holds a section per task."""

    path: str
    shared: bool


@dataclass(frozen=True)
class TaskFiles:
    """A task, its index entry (if any) and its mirrors."""

    task_id: str
    entry: IndexEntry | None
    mirrors: tuple[Mirror, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """How headings and collateral may name the task: its id, then its number."""
        number = self.entry.number if self.entry else number_of(self.task_id)
        return (self.task_id, number) if number and number != self.task_id else (self.task_id,)


@dataclass(frozen=True)
class MirrorView:
    """What one mirror holds for a task: its items, or why it holds none (``absent``)."""

    mirror: Mirror
    checklist: Checklist | None
    heading: Heading | None
    items: tuple[Item, ...]
    absent: str | None


def mirror_templates(root: Path) -> tuple[str, ...]:
    """The mirror templates: the config's ``tasks.mirrors``, else `DEFAULT_MIRRORS`."""
    return load_config(root).mirrors or DEFAULT_MIRRORS


def task_files(templates: tuple[str, ...], task_id: str, entry: IndexEntry | None) -> TaskFiles:
    """The mirrors of ``task_id``: the templates, then the entry's own checklist paths."""
    mirrors = [Mirror(t.replace(PLACEHOLDER, task_id), PLACEHOLDER not in t) for t in templates]
    named = [entry.paths[key] for key in MIRROR_PATH_KEYS if key in entry.paths] if entry else []
    known = {mirror.path for mirror in mirrors}
    for path in named:
        normal = PurePosixPath(path).as_posix()
        if _inside_root(normal) and normal not in known:
            mirrors.append(Mirror(normal, shared=False))
            known.add(normal)
    return TaskFiles(task_id, entry, tuple(mirrors))


def discover_tasks(root: Path, templates: tuple[str, ...]) -> set[str]:
    """Task ids that have a file matching one of the per-task templates."""
    found: set[str] = set()
    for template in templates:
        if PLACEHOLDER not in template:
            continue
        prefix, suffix = template.split(PLACEHOLDER)
        for path in root.glob(template.replace(PLACEHOLDER, "*")):
            relative = path.relative_to(root).as_posix()
            name = relative[len(prefix) : len(relative) - len(suffix)]
            if is_valid_id(name) and path.is_file():
                found.add(name)
    return found


def resolve_task(
    root: Path, index: TaskIndex | None, templates: tuple[str, ...], name: str
) -> TaskFiles:
    """The task ``name`` designates: in the index (task id, ``<id>``, ``<id>-<slug>``), else
    the task whose checklist mirror exists, else the one mirror file whose ``<id>`` is ``name``."""
    validate_id(name, "task")
    matches = index.matches(name) if index else []
    if len(matches) == 1:
        return task_files(templates, matches[0].task_id, matches[0])
    if matches:
        listed = ", ".join(entry.task_id for entry in matches)
        raise UsageError(f"task {name!r} is ambiguous in {INDEX_PATH} ({listed}); give the task id")
    files = task_files(templates, name, None)
    if any(load_mirror(root, mirror, files.names).absent is None for mirror in files.mirrors):
        return files
    numbered = sorted(task for task in discover_tasks(root, templates) if number_of(task) == name)
    if len(numbered) == 1:
        return task_files(templates, numbered[0], None)
    if numbered:
        raise UsageError(f"task {name!r} is ambiguous ({', '.join(numbered)}); give the task id")
    for mirror in files.mirrors:  # a mirror linked out of the repository explains the miss
        resolve_within(root / mirror.path, root, mirror.path, LINKED_MIRROR_FIX)
    listed = ", ".join(mirror.path for mirror in files.mirrors)
    raise UsageError(
        f"unknown task {name!r}: not in {INDEX_PATH} and no checklist ({listed}) has it; "
        f"create it with: codex-orchestrator tasks new {name} --title TEXT"
    )


def number_of(task_id: str) -> str | None:
    """The ``<id>`` of a task id shaped ``<digits>-<slug>``."""
    leading = _LEADING_NUMBER.match(task_id)
    return leading.group(1) if leading else None


def load_mirror(
    root: Path, mirror: Mirror, names: tuple[str, ...], cache: FileCache | None = None
) -> MirrorView:
    """Read one mirror of the task named ``names`` (files are parsed once per ``cache``)."""
    path = root / mirror.path
    parsed = cache.get(path) if cache is not None else None
    if parsed is None:
        parsed = _read(root, mirror.path)
        if cache is not None:
            cache[path] = parsed
    if isinstance(parsed, str):
        return MirrorView(mirror, None, None, (), parsed)
    if not mirror.shared:
        return MirrorView(mirror, parsed, None, parsed.items, None)
    heading = section_heading(parsed, names)
    if heading is None:
        return MirrorView(
            mirror,
            parsed,
            None,
            (),
            f"has no section for it (no heading names {' or '.join(names)})",
        )
    return MirrorView(mirror, parsed, heading, parsed.section(heading), None)


def section_heading(checklist: Checklist, names: tuple[str, ...]) -> Heading | None:
    """The first heading naming ``names[0]``, else the first naming a later name."""
    for name in names:
        for heading in checklist.headings:
            if mentions(heading.text, name):
                return heading
    return None


def mentions(text: str, name: str) -> bool:
    """True when ``name`` occurs in ``text`` as a whole: after no letter or digit, and before
    no id character (so ``0202`` is not mentioned by ``10202`` nor by ``0202-other-task``)."""
    start = text.find(name)
    while start >= 0:
        end = start + len(name)
        if text[start - 1 : start] not in _ALNUM and text[end : end + 1] not in _ID_CHARS:
            return True
        start = text.find(name, start + 1)
    return False


def _read(root: Path, relative: str) -> Checklist | str:
    try:
        return parse(read_inside(root, relative, TEXT_SIZE_LIMIT))
    except FileNotFoundError:
        return "does not exist"
    except OutsideRootError as error:
        return f"is not read: {error.message}"
    except OSError as error:
        return f"cannot be read ({error.strerror})"


def _inside_root(path: str) -> bool:
    pure = PurePosixPath(path)
    return bool(path.strip()) and not pure.is_absolute() and ".." not in pure.parts
