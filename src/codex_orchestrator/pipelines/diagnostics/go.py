"""Go modules (``go.mod``): ``go build``, ``go vet`` and ``go test`` over ``./...``."""

from __future__ import annotations

import re

from codex_orchestrator.pipelines.diagnostics.checks import Project, Run, manifest_project
from codex_orchestrator.pipelines.diagnostics.repo import RepoFiles

_MODULE_LINE = re.compile(r"^\s*module\s+\S", re.MULTILINE)
CHECKS = {
    "build": Run("go build ./...", "go.mod: builds every package", ("go",)),
    "lint": Run("go vet ./...", "go.mod: go vet checks every package", ("go",)),
    "test": Run("go test ./...", "go.mod: tests every package", ("go",)),
}


def detect(repo: RepoFiles) -> Project | None:
    """The Go module at the root, or None."""
    return manifest_project(repo, "Go", "go.mod", _problem, CHECKS)


def _problem(text: str) -> str | None:
    return None if _MODULE_LINE.search(text) else "go.mod has no 'module' line; fix the file"
