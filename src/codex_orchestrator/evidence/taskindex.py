"""``tasks/index.json``: the task index (``{"items": [{"id", "slug", "title", ...}]}``).

The task id of an item is its ``task_key`` when present, else ``<id>-<slug>`` (``<id>`` alone
when it has no slug). A task may be named by its task id, its ``<id>`` or its ``<id>-<slug>``.
Items without a usable task id are ignored. An item may name its files in ``path`` and in
``paths`` (``task``, ``agent_task``, ``prd``, ``tech_spec``, ``action_plan``, ``spec``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.pipelines.model import INDEX_PATH
from codex_orchestrator.util.ids import is_valid_id
from codex_orchestrator.util.jsonio import loads_checked
from codex_orchestrator.util.safefs import TEXT_SIZE_LIMIT, read_inside


class IndexEntry(NamedTuple):
    """One task of the index."""

    task_id: str
    number: str | None
    slug: str | None
    title: str | None
    path: str | None
    paths: Mapping[str, str]

    @property
    def aliases(self) -> frozenset[str]:
        """Names that designate this task besides its task id: ``<id>`` and ``<id>-<slug>``."""
        names = {self.number, f"{self.number}-{self.slug}" if self.number and self.slug else None}
        return frozenset(name for name in names if name)

    @property
    def collateral(self) -> dict[str, str]:
        """The files the entry names, by field (``path``, ``paths.prd``, ...)."""
        named = {"path": self.path} if self.path else {}
        return named | {f"paths.{key}": value for key, value in self.paths.items()}


class TaskIndex(NamedTuple):
    """The parsed index: the raw document (to extend it) and its entries."""

    document: dict[str, Any]
    entries: tuple[IndexEntry, ...]

    def matches(self, name: str) -> list[IndexEntry]:
        """Entries whose task id is ``name``; if none, those that ``name`` designates otherwise."""
        exact = [entry for entry in self.entries if entry.task_id == name]
        return exact or [entry for entry in self.entries if name in entry.aliases]

    def entry(self, task_id: str) -> IndexEntry | None:
        """The entry whose task id is ``task_id``."""
        return next((entry for entry in self.entries if entry.task_id == task_id), None)


def load_index(root: Path) -> TaskIndex | None:
    """Read ``tasks/index.json`` (None when absent); raise `OrchestratorError` when unusable."""
    try:
        raw = read_inside(root, INDEX_PATH, TEXT_SIZE_LIMIT)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise OrchestratorError(
            f"{INDEX_PATH}: cannot read ({error.strerror}); make it a readable file"
        ) from None
    document = loads_checked(raw, INDEX_PATH)
    items = document.get("items") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise OrchestratorError(f'{INDEX_PATH}: no "items" list; the index is {{"items": [...]}}')
    entries = (_entry(item) for item in items if isinstance(item, dict))
    return TaskIndex(document, tuple(entry for entry in entries if entry is not None))


def task_slug(root: Path, task_id: str) -> str | None:
    """The slug of ``task_id``'s index entry; None when absent, unknown or unreadable."""
    try:
        index = load_index(root)
    except OrchestratorError:
        return None
    matches = index.matches(task_id) if index else []
    return matches[0].slug if len(matches) == 1 else None


def _entry(item: dict[str, Any]) -> IndexEntry | None:
    number, slug, key = (_text(item.get(field)) for field in ("id", "slug", "task_key"))
    task_id = key or (f"{number}-{slug}" if number and slug else number)
    if not task_id or not is_valid_id(task_id):
        return None
    paths = item.get("paths")
    named = (
        {k: v for k, v in paths.items() if isinstance(v, str) and v}
        if isinstance(paths, dict)
        else {}
    )
    return IndexEntry(
        task_id, number, slug, _text(item.get("title")), _text(item.get("path")), named
    )


def _text(value: object) -> str | None:
    """A string or integer field as text; None when absent or of another type."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value).strip() or None
