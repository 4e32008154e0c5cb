"""Where a workspace's stage cache lives, and what its fingerprints never see.

The one place that turns the ``cache_dir`` setting into a directory (default
``<runs root>/.cache``; relative paths are relative to the root) and opens the cache for a run,
``plan`` or ``prune``, so that every surface reads the same entries and excludes the same
directories (the runs and out roots and the cache directory, when they lie inside the root).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from codex_orchestrator.cache.fingerprint import Fingerprinter
from codex_orchestrator.cache.store import CacheStore
from codex_orchestrator.records.workspace import CACHE_DIR_SETTING, Workspace
from codex_orchestrator.util.console import note

DEFAULT_CACHE_DIR = ".cache"


def cache_dir(workspace: Workspace, config_settings: Mapping[str, object]) -> Path:
    """The cache directory the settings name (absolute; links are not resolved here, the
    store opens it without following them below)."""
    configured = config_settings.get(CACHE_DIR_SETTING)
    if isinstance(configured, str):
        return Path(os.path.normpath(workspace.root / configured))
    return workspace.runs_dir / DEFAULT_CACHE_DIR


def excluded(workspace: Workspace, directory: Path) -> tuple[str, ...]:
    """The tool's own directories below the root, relative to it: never inputs or outputs."""
    root = os.path.realpath(workspace.root)
    found = []
    for path in (workspace.runs_dir, workspace.out_dir, directory):
        real = os.path.realpath(path)
        if real != root and real.startswith(root + os.sep):
            found.append(os.path.relpath(real, root))
    return tuple(dict.fromkeys(found))


class OpenCache(NamedTuple):
    """A fingerprinter and the entries of one workspace's cache."""

    fingerprinter: Fingerprinter
    store: CacheStore


def open_cache(
    workspace: Workspace,
    config_settings: Mapping[str, object],
    *,
    read_only: bool = False,
    warn: Callable[[str], None] = note,
) -> OpenCache:
    """The cache of ``workspace`` (``read_only`` for ``plan``: nothing is ever written)."""
    directory = cache_dir(workspace, config_settings)
    exclude = excluded(workspace, directory)
    return OpenCache(
        Fingerprinter(workspace.root, directory, read_only=read_only, exclude=exclude, warn=warn),
        CacheStore(directory, workspace.root, exclude=exclude, warn=warn),
    )
