"""Whether the live view is on, and the two ways to open it (a live run, a watched run).

Cheap to import: rich is loaded (by `codex_orchestrator.view.live`) only when the view is on.
The view is on when stderr is a terminal, the output is not JSON, ``TERM`` is not ``dumb`` and
``CI`` is unset; otherwise the commands print plain lines with no escape codes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.records.manifest import MANIFEST_NAME, ManifestStore, load_manifest


def live_view_wanted(json_output: bool) -> bool:
    """True when the live view should draw on stderr."""
    if json_output or os.environ.get("CI") or os.environ.get("TERM", "") == "dumb":
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):  # stderr closed or replaced
        return False


def _colour() -> bool:
    """Colours unless ``NO_COLOR`` is set to anything non-empty (https://no-color.org)."""
    return not os.environ.get("NO_COLOR")


@contextlib.contextmanager
def show_run(json_output: bool, store: ManifestStore) -> Iterator[object | None]:
    """Show the run held by ``store`` (start/resume) while the block runs; None when off."""

    def snapshot() -> dict[str, Any]:
        with store.lock:  # the runner mutates entries in place: copy them under its lock
            data = dict(store.data)
            data["commands"] = [dict(entry) for entry in store.data.get("commands", [])]
        return data

    with _open(json_output, snapshot, store.run_dir) as view:
        yield view


@contextlib.contextmanager
def show_manifest(json_output: bool, run_dir: Path) -> Iterator[object | None]:
    """Show the run whose manifest is on disk in ``run_dir`` (``status --watch``)."""
    path = run_dir / MANIFEST_NAME
    cache: dict[str, Any] = {}

    def snapshot() -> Mapping[str, Any] | None:
        try:
            info = path.stat()
            key = (info.st_mtime_ns, info.st_size, info.st_ino)
            if cache.get("key") != key:
                cache.update(key=key, manifest=load_manifest(path))
        except (OSError, OrchestratorError):
            pass  # keep the last good snapshot; the watch loop reports a broken manifest
        manifest: Mapping[str, Any] | None = cache.get("manifest")
        return manifest

    with _open(json_output, snapshot, run_dir) as view:
        yield view


@contextlib.contextmanager
def _open(
    json_output: bool, snapshot: Callable[[], Mapping[str, Any] | None], run_dir: Path
) -> Iterator[object | None]:
    # `snapshot` is a `view.rows.Snapshot`, spelled out: importing `view.rows` here would load
    # the rows and log readers even when the view stays off.
    if not live_view_wanted(json_output):
        yield None
        return
    try:
        from codex_orchestrator.view.live import LiveView
    except ImportError:  # rich missing from a broken install: plain lines still work
        yield None
        return
    with LiveView(snapshot, run_dir, colour=_colour()) as view:
        yield view
