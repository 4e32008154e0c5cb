"""Helpers shared by the run-control tests: raw CLI calls, waiting, manifests, process cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import Repo


def raw_cli(repo: Repo, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI and keep its output as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "codex_orchestrator", *args],
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def json_cli(repo: Repo, *args: str, timeout: float = 60) -> tuple[int, Any]:
    """Run the CLI with ``--format json``; exit code and the parsed document."""
    result = repo.cli(*args, "--format", "json", timeout=timeout)
    return result.returncode, json.loads(result.stdout)


def run_dirs(repo: Repo, task: str) -> list[Path]:
    """Run directories of ``task``, oldest first."""
    cli = repo.root / ".runs" / task / "cli"
    return (
        sorted(path for path in cli.iterdir() if not path.name.startswith("."))
        if cli.exists()
        else []
    )


def manifest_of(run_dir: Path) -> dict[str, Any]:
    """The manifest of a run directory."""
    loaded: dict[str, Any] = json.loads((run_dir / "manifest.json").read_text())
    return loaded


def try_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The manifest, or None while it does not exist yet."""
    try:
        return manifest_of(run_dir)
    except (OSError, ValueError):
        return None


def handle_recorded(run_dir: Path, index: int) -> bool:
    """Stage ``index``'s handle is in the run's event log (where resume and cancel find it)."""
    try:
        lines = (run_dir / "runner.ndjson").read_text().splitlines()
    except OSError:
        return False
    return any(
        '"stage_handle"' in line and line.endswith("}") and json.loads(line)["index"] == index
        for line in lines
    )


def state_entries(repo: Repo, task: str) -> dict[str, dict[str, Any]]:
    """``state.json`` entries of ``task`` by run id."""
    document = json.loads((repo.root / "out" / task / "state.json").read_text())
    return {entry["runId"]: entry for entry in document["runs"]}


def metrics_lines(repo: Repo, task: str) -> list[dict[str, Any]]:
    """Parseable lines of ``task``'s metrics.json."""
    lines = []
    for line in (repo.root / ".runs" / task / "metrics.json").read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def kill_group(pgid: int | None) -> None:
    """SIGKILL a process group this test started (recorded pgid); quiet when it is gone."""
    if isinstance(pgid, int) and pgid > 1:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def kill_run_groups(run_dir: Path) -> None:
    """End every stage group recorded in a run's manifest (test cleanup)."""
    manifest = try_manifest(run_dir)
    for entry in manifest["commands"] if manifest else []:
        kill_group(entry.get("pgid"))
        handle = entry.get("handle")
        if isinstance(handle, dict):
            kill_group(handle.get("pgid"))
