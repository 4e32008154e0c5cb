"""What a detector proposes for a stage: a command to run (and why), or why there is none."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from codex_orchestrator.pipelines.diagnostics.repo import RepoFiles

#: The stages a detector fills, in pipeline order (spec-guard, the last, is not detected).
CHECKED_STAGES = ("build", "lint", "test")


class Run(NamedTuple):
    """Run ``command`` at the root; ``requires`` names executables it needs on PATH;
    ``task_runner`` (``tox``, ``nox``) names the runner whose output says what it skipped."""

    command: str
    why: str
    requires: tuple[str, ...] = ()
    task_runner: str | None = None


class Skip(NamedTuple):
    """No command for the stage; ``reason`` says what was looked for or what is broken."""

    reason: str


Check = Run | Skip


def with_passed_over(check: Check, passed_over: list[str]) -> Check:
    """``check`` saying which declared candidates were not chosen for rewriting files."""
    if not passed_over:
        return check
    note = f"not chosen: {'; '.join(passed_over)}"
    if isinstance(check, Run):
        return check._replace(why=f"{check.why} ({note})")
    return Skip(f"{check.reason} ({note})")


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


def manifest_project(
    repo: RepoFiles,
    kind: str,
    manifest: str,
    problem_in: Callable[[str], str | None],
    checks: Mapping[str, Check],
) -> Project | None:
    """The project identified by the file ``manifest`` at the root (None when it is absent).

    ``problem_in`` reads the file's text and says what makes it unusable, if anything; an
    unreadable or unusable manifest gives a project whose stages are skipped with the problem.
    """
    text, problem = repo.read(manifest)
    if text is None and problem is None:
        return None
    if text is not None:
        problem = problem_in(text)
    if problem is not None:
        return broken_project(kind, manifest, problem)
    return Project(kind, manifest, checks)
