"""What a detector proposes for a stage: a command to run (and why), or why there is none."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

#: The stages a detector fills, in pipeline order (spec-guard, the last, is not detected).
CHECKED_STAGES = ("build", "lint", "test")


class Run(NamedTuple):
    """Run ``command`` at the root; ``requires`` names executables it needs on PATH."""

    command: str
    why: str
    requires: tuple[str, ...] = ()


class Skip(NamedTuple):
    """No command for the stage; ``reason`` says what was looked for or what is broken."""

    reason: str


Check = Run | Skip


class Project(NamedTuple):
    """A project kind found at the root, with the file(s) that identified it.

    ``checks`` maps a stage id (``build``, ``lint``, ``test``) to its check; a stage missing
    from it gets a skip naming what the detector looked for.
    """

    kind: str
    evidence: str
    checks: Mapping[str, Check]

    def describe(self) -> str:
        """``Python (pyproject.toml, uv.lock)``: the kind and what identified it."""
        return f"{self.kind} ({self.evidence})"


def broken_project(kind: str, evidence: str, problem: str) -> Project:
    """A project whose manifest cannot be used: every checked stage skipped with ``problem``."""
    return Project(kind, evidence, dict.fromkeys(CHECKED_STAGES, Skip(f"skipped: {problem}")))
