"""Building real runs whose reports the tests look at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Repo

HOSTILE = "<script>alert(1)</script>"


def failed_then_resumed_run(repo: Repo) -> tuple[str, Path]:
    """A run whose ``flaky`` stage fails, then succeeds on resume (two attempts)."""
    marker = repo.root / "second-try"
    repo.pipeline(
        {"id": "build", "command": f"echo '{HOSTILE}'; echo built"},
        {
            "id": "flaky",
            "command": f"if [ -e {marker} ]; then echo fixed; else echo '{HOSTILE}' >&2; exit 4; fi",
        },
        {"id": "tail", "command": "echo the-end"},
    )
    result = repo.cli("start", "--format", "json")
    assert result.returncode == 1, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    marker.write_text("")
    resumed = repo.cli("resume", run_id, "--actor", f"tester{HOSTILE}", "--reason", "retry")
    assert resumed.returncode == 0, resumed.stderr
    return run_id, repo.root / ".runs/default/cli" / run_id


def report(repo: Repo, *args: str) -> tuple[int, str, str]:
    """``report ARGS``: exit code, stdout, stderr."""
    result = repo.cli("report", *args)
    return result.returncode, result.stdout, result.stderr


def edit_manifest(run_dir: Path, **fields: Any) -> None:
    """Set top-level manifest fields, as another tool (e.g. ``cancel``) would."""
    path = run_dir / "manifest.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))
