"""A repository whose cached stages count their real runs: the stage cache's end-to-end tests
(the real CLI, real files, real stage processes) share it (the ``cached`` fixture).

Every cached stage appends a line to ``ran.log`` outside the root (a file that is no input),
so each test can see which stages really started a process.
"""

from __future__ import annotations

from typing import Any

from conftest import Repo


class Cached:
    """A repository whose stages count their real runs in ``ran.log``, beside the root."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.root = repo.root
        self.ran_log = repo.root.parent / "ran.log"
        if not (self.root / "src").exists():  # (a second worktree has it already)
            (self.root / "src").mkdir()
            (self.root / "src" / "app.py").write_text("print('app')\n")

    def stage(self, stage_id: str, extra: str = "", **fields: Any) -> dict[str, Any]:
        """A stage that records its run, prints to both streams and does ``extra``."""
        command = f"echo {stage_id} >> {self.ran_log}; echo out-{stage_id}; echo err-{stage_id} >&2"
        fields.setdefault("cache", {"inputs": ["src/**"]})
        return {"id": stage_id, "command": command + (f"; {extra}" if extra else ""), **fields}

    def ran(self) -> list[str]:
        """The stages that started a process since the last call."""
        if not self.ran_log.exists():
            return []
        lines = self.ran_log.read_text().split()
        self.ran_log.unlink()
        return lines

    def start(self, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        """``start ARGS``; the run's manifest (the run must have succeeded)."""
        code, document = self.repo.start_json(*args, env=env)
        manifest = self.repo.manifest(document)
        assert code == 0, manifest
        return manifest


def reasons(manifest: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """``{stage id: (cache status, reason)}`` of the run's cached stages."""
    return {
        entry["id"]: (entry["cache"]["status"], entry["cache"]["reason"])
        for entry in manifest["commands"]
        if entry.get("cache")
    }
