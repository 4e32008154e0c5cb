"""The built-in ``diagnostics`` pipeline: build, lint, test, spec-guard, fitted to the repository.

Used when ``codex.orchestrator.json`` defines no pipeline ``diagnostics``; built only when it
is looked up (``plan``/``start`` of diagnostics). Detection reads a few files at the root and
never runs anything. Each of build, lint and test takes, in order:

1. a Makefile/justfile target named for it (any language);
2. the root project's own check: the first project kind found of Rust (``Cargo.toml``), Go
   (``go.mod``), Python (`python`: tox/nox, then the project's environment, then PATH) and
   Node.js (`node`: package.json scripts with the lock file's package manager);
3. otherwise the stage is skipped, its summary saying what was looked for.

Other project kinds at the root are named in the description but not run; a config file
overrides the whole pipeline. spec-guard, the last stage, runs only in a repository that opted
in to the task workflow (``tasks/index.json``, or ``tasks`` in the config). The full table is in docs/diagnostics.md.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from codex_orchestrator.cache.spec import GIT_INPUTS, CacheSpec
from codex_orchestrator.pipelines.diagnostics import go, node, python, rust
from codex_orchestrator.pipelines.diagnostics.checks import (
    CHECKED_STAGES,
    Check,
    Project,
    Run,
    Skip,
    with_passed_over,
)
from codex_orchestrator.pipelines.diagnostics.make import Declared
from codex_orchestrator.pipelines.diagnostics.repo import RepoFiles
from codex_orchestrator.pipelines.model import BUILTIN_PIPELINE, INDEX_PATH, CommandStage, Pipeline

#: Project kinds in order of precedence when several are at the root.
DETECTORS: tuple[Callable[[RepoFiles], Project | None], ...] = (
    rust.detect,
    go.detect,
    python.detect,
    node.detect,
)
#: The stages in order, with their titles and what each needs: lint and test run at once after
#: build (see docs/graphs.md); spec-guard needs nothing.
STAGES = (("build", "Build", ()), ("lint", "Lint", ("build",)), ("test", "Test", ("build",)))
NOT_GIT = "skipped: not a git repository (spec-guard compares changes against git history)"
NOT_OPTED_IN = (
    f'skipped: this repository does not use the task workflow (no {INDEX_PATH}, no "tasks" '
    "in the config); spec-guard checks only repositories that opted in"
)


def builtin_diagnostics(
    root: Path, tasks_configured: bool = False, *, cache: bool = False
) -> Pipeline:
    """Build the ``diagnostics`` pipeline for the repository at ``root``.

    ``tasks_configured``: the config file has a ``tasks`` key (with ``tasks/index.json``, the
    ways a repository opts in to spec-guard); with ``cache`` (the ``diagnostics_cache``
    setting) build, lint and test cache on ``inputs: "git"``.
    """
    repo = RepoFiles(root)
    declared = Declared(repo)
    found = [project for detect in DETECTORS if (project := detect(repo)) is not None]
    project = found[0] if found else None
    stages = [
        _stage(stage_id, title, needs, _choose(stage_id, declared, project), cache=cache)
        for stage_id, title, needs in STAGES
    ]
    stages.append(_spec_guard(root, tasks_configured or repo.has_file(INDEX_PATH)))
    return Pipeline(
        id=BUILTIN_PIPELINE,
        title="Diagnostics",
        description=_description(declared, found),
        source="builtin",
        stages=tuple(stages),
    )


def _choose(stage_id: str, declared: Declared, project: Project | None) -> Check:
    """The declared target, else the project's check, else a skip saying what was missing.

    A candidate whose commands rewrite files is never chosen (see `fixers`): the stage's
    ``why`` names it.
    """
    target = declared.check(stage_id, fallback=project is None)
    if target is not None:
        return target
    passed_over = declared.passed_over(stage_id, fallback=project is None)
    if project is not None and stage_id in project.checks:
        return with_passed_over(project.checks[stage_id], passed_over)
    return with_passed_over(_nothing_found(stage_id, declared, project), passed_over)


def _nothing_found(stage_id: str, declared: Declared, project: Project | None) -> Skip:
    looked_for = declared.looked_for(stage_id, fallback=project is None)
    if project is None:
        return Skip(
            f"skipped: no {stage_id} step found ({looked_for}; no Python, Node.js, Rust or Go "
            "project at the root)"
        )
    return Skip(f"skipped: no {stage_id} step found ({looked_for}; {project.kind})")


def _stage(
    stage_id: str, title: str, needs: tuple[str, ...], check: Check, *, cache: bool
) -> CommandStage:
    if isinstance(check, Run):
        return CommandStage(
            id=stage_id,
            title=title,
            command=check.command,
            requires=check.requires,
            why=check.why,
            needs=needs,
            task_runner=check.task_runner,
            cache=CacheSpec(inputs=GIT_INPUTS) if cache else None,
        )
    return CommandStage(id=stage_id, title=title, command="", skip_reason=check.reason, needs=needs)


def _spec_guard(root: Path, opted_in: bool) -> CommandStage:
    """The orchestrator's own policy check: only where the repository opted in to the task
    workflow (a skip otherwise is "not applicable", never a check that ran)."""
    in_git = any(os.path.exists(directory / ".git") for directory in (root, *root.parents))
    skip_reason = None
    if not opted_in:
        skip_reason = NOT_OPTED_IN
    elif not in_git:
        skip_reason = NOT_GIT
    return CommandStage(
        id="spec-guard",
        title="Spec guard",
        command=f"{shlex.quote(sys.executable)} -m codex_orchestrator spec-guard",
        requires=("git",),
        skip_reason=skip_reason,
        why="the orchestrator's own spec-guard check of this change (needs no other stage)",
        needs=(),
    )


def _description(declared: Declared, found: list[Project]) -> str:
    parts = []
    if found:
        parts.append(f"root project: {found[0].describe()}")
    if declared.files():
        parts.append(f"declared targets in {', '.join(declared.files())}")
    if len(found) > 1:
        others = ", ".join(project.describe() for project in found[1:])
        parts.append(f"also found, not run: {others}")
    detected = "; ".join(parts) or "no project files"
    return f"Build, lint, test and spec-guard the repository (detected: {detected})"


__all__ = ["CHECKED_STAGES", "builtin_diagnostics"]
