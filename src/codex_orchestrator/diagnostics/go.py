"""Go modules (``go.mod``): ``go build``, ``go vet`` and ``go test`` over ``./...``."""

from __future__ import annotations

import re

from codex_orchestrator.diagnostics.checks import Project, Run, broken_project
from codex_orchestrator.diagnostics.repo import RepoFiles

_MODULE_LINE = re.compile(r"^\s*module\s+\S", re.MULTILINE)


def detect(repo: RepoFiles) -> Project | None:
    """The Go module at the root, or None."""
    text, problem = repo.read("go.mod")
    if text is None and problem is None:
        return None
    if text is not None and not _MODULE_LINE.search(text):
        problem = "go.mod has no 'module' line; fix the file"
    if problem is not None:
        return broken_project("Go", "go.mod", problem)
    return Project(
        "Go",
        "go.mod",
        {
            "build": Run("go build ./...", "go.mod: builds every package", ("go",)),
            "lint": Run("go vet ./...", "go.mod: go vet checks every package", ("go",)),
            "test": Run("go test ./...", "go.mod: tests every package", ("go",)),
        },
    )
