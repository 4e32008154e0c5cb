"""Process and record helpers shared by the figures that start, signal and inspect runs.

Process survivors are found by scanning ``/proc`` for a recorded process group id (zombies
aside: they run nothing and are reaped by their new parent). Nothing here kills by name: only
groups a run recorded, or that a figure started itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _harness import BenchError, BenchRepo, cli_argv
from codex_orchestrator.util.procfs import live_group_members

EXIT_SIGTERM = 128 + int(signal.SIGTERM)


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose process group is ``pgid``."""
    return live_group_members(pgid) or []


def wait_group_gone(pgid: int, limit: float = 10.0) -> None:
    """Wait until no live process of group ``pgid`` is left; BenchError after ``limit`` s."""
    deadline = time.perf_counter() + limit
    while group_members(pgid):
        if time.perf_counter() > deadline:
            raise BenchError(f"process group {pgid} still alive after {limit:g} s")
        time.sleep(0.001)


def kill_group_quietly(pgid: int) -> None:
    """SIGKILL a group this bench started or a run recorded (clean-up after a figure).

    Never a group id <= 1: ``killpg(0)`` is our own group, 1 is init's."""
    if isinstance(pgid, bool) or not isinstance(pgid, int) or pgid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def spawn_cli(
    repo: BenchRepo, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``codex-orchestrator ARGS`` in ``repo`` without waiting."""
    return subprocess.Popen(
        cli_argv(*args),
        env=dict(env or repo.env),
        cwd=repo.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stop_cli(proc: subprocess.Popen[bytes]) -> None:
    """Kill an orchestrator this bench started, if still running, and collect its output."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def task_dirs(repo: BenchRepo, task: str) -> tuple[Path, Path]:
    """The task's runs directory and out directory."""
    return repo.root / ".runs" / task, repo.root / "out" / task


def find_manifest(repo: BenchRepo, task: str) -> Path | None:
    """The manifest of the task's first run, once it exists."""
    found = sorted((repo.root / ".runs" / task / "cli").glob("*/manifest.json"))
    return found[0] if found else None


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file."""
    document: dict[str, Any] = json.loads(path.read_bytes())
    return document


def recorded_groups(manifest: Mapping[str, Any]) -> list[int]:
    """The process groups a run's stages recorded (local handles, or the older ``pgid``)."""
    groups: list[int] = []
    for entry in manifest.get("commands", []):
        handle = entry.get("handle")
        pgid = handle.get("pgid") if isinstance(handle, dict) else entry.get("pgid")
        if isinstance(pgid, int) and pgid > 1:
            groups.append(pgid)
    return groups


def wait_stages_running(
    repo: BenchRepo,
    task: str,
    proc: subprocess.Popen[bytes],
    *,
    count: int = 1,
    limit: float = 20.0,
) -> tuple[Path, list[int]]:
    """Poll until ``count`` stages of the run are running with recorded groups."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise BenchError(
                f"orchestrator exited {proc.returncode} before its stages ran: "
                f"{err[-400:].decode('utf-8', 'replace')}"
            )
        path = find_manifest(repo, task)
        if path is not None:
            with contextlib.suppress(ValueError):
                manifest = load_json(path)
                running = [e for e in manifest["commands"] if e.get("status") == "running"]
                groups = recorded_groups({"commands": running})
                if len(groups) >= count:
                    return path, groups
        time.sleep(0.003)
    raise BenchError(f"{count} stage(s) of task {task} not running after {limit:g} s")


def unparseable_json(*roots: Path) -> tuple[list[str], int]:
    """Files under ``roots`` named ``*.json`` / ``*.ndjson`` that do not parse; temp files left."""
    bad: list[str] = []
    temps = 0
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath, name)
                if name.endswith(".tmp"):
                    temps += 1
                    continue
                if not name.endswith((".json", ".ndjson")):
                    continue
                data = path.read_bytes()
                try:
                    if name.endswith(".ndjson") or name == "metrics.json":
                        for line in data.splitlines():
                            if line.strip():
                                json.loads(line)
                    else:
                        json.loads(data)
                except ValueError:
                    bad.append(str(path.relative_to(root.parent)))
    return bad, temps
