"""Python projects: the project's declared tasks, else its own environment, else PATH.

For each stage the first level that applies decides (a tool it needs that is not installed
makes the stage skipped; it never falls back to another environment):

1. tox environments or nox sessions named for the stage (Makefile/justfile targets come
   before these, for every language: see `codex_orchestrator.pipelines.diagnostics`);
2. the project's environment: ``uv run`` (``uv.lock``), ``poetry run`` (``poetry.lock``),
   ``hatch run`` (``[tool.hatch.envs]`` or ``hatch.toml``), ``.venv/bin/python -m``;
3. the tools on PATH (``python3``, ``ruff``/``flake8``, ``pytest``).

The orchestrator's own interpreter never runs the project's tools.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from typing import NamedTuple

from codex_orchestrator.pipelines.diagnostics.checks import (
    Check,
    Project,
    Run,
    Skip,
    broken_project,
    with_passed_over,
)
from codex_orchestrator.pipelines.diagnostics.repo import RepoFiles, parse_toml
from codex_orchestrator.pipelines.diagnostics.runners import find_runners

MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")
TEST_MARKERS = ("tests", "test", "conftest.py", "pytest.ini")
TEST_SECTIONS = (("setup.cfg", "[tool:pytest]"), ("tox.ini", "[pytest]"))
RUFF_CONFIGS = ("ruff.toml", ".ruff.toml")
COMPILEALL_EXCLUDE = r"[/\\](\.[^/\\]+|node_modules|venv|build|dist)[/\\]"
_PACKAGE_NAME = r'^name = "{}"$'


class Environment(NamedTuple):
    """How to run a tool inside the project's environment, and whether a tool is in it."""

    prefix: str
    source: str
    requires: tuple[str, ...]
    packages: str | None  # lock file text listing the installed packages, if any
    bin_dir: str | None = None  # .venv/bin: a tool is there when its script is

    def command(self, tool: str, args: str) -> str:
        """``tool args`` run in this environment (``python`` is its interpreter)."""
        if self.bin_dir is None:
            return f"{self.prefix} {tool} {args}"
        return f"{self.prefix} {args}" if tool == "python" else f"{self.prefix} -m {tool} {args}"


def detect(repo: RepoFiles) -> Project | None:
    """The Python project at the root, or None when there is none."""
    markers = [name for name in MARKERS if repo.has_file(name)]
    if not markers:
        return None
    text, problem = repo.read("pyproject.toml")
    pyproject: Mapping[str, object] = {}
    if text is not None:
        parsed, problem = parse_toml(text, "pyproject.toml")
        pyproject = parsed or {}
    if problem:
        return broken_project("Python", ", ".join(markers), problem)
    runners = find_runners(repo, pyproject)
    env = _environment(repo, pyproject)
    evidence = markers + [runner.source for runner in runners]
    if env is not None:
        evidence.append(env.source)
    checks: dict[str, Check] = {}
    for stage_id, build in (("build", _build), ("lint", _lint), ("test", _test)):
        declared = next((r.check(stage_id) for r in runners if r.check(stage_id)), None)
        check = declared or build(repo, pyproject, env)
        passed_over = [note for runner in runners for note in runner.passed_over(stage_id)]
        checks[stage_id] = with_passed_over(check, passed_over)
    return Project("Python", ", ".join(dict.fromkeys(evidence)), checks)


def _environment(repo: RepoFiles, pyproject: Mapping[str, object]) -> Environment | None:
    if repo.has_file("uv.lock"):
        return Environment("uv run", "uv.lock", ("uv",), repo.text("uv.lock"))
    if repo.has_file("poetry.lock"):
        return Environment("poetry run", "poetry.lock", ("poetry",), repo.text("poetry.lock"))
    if _hatch_envs(pyproject) or repo.has_file("hatch.toml"):
        source = "hatch.toml" if repo.has_file("hatch.toml") else "[tool.hatch.envs]"
        return Environment("hatch run", source, ("hatch",), None)
    if repo.has_file(".venv/bin/python"):
        return Environment(".venv/bin/python", ".venv", (), None, ".venv/bin")
    return None


def _hatch_envs(pyproject: Mapping[str, object]) -> bool:
    tool = pyproject.get("tool")
    hatch = tool.get("hatch") if isinstance(tool, dict) else None
    return isinstance(hatch, dict) and "envs" in hatch


def _has(repo: RepoFiles, env: Environment, tool: str, pyproject_text: str) -> bool:
    """Whether ``tool`` is installed in (or declared for) the project's environment."""
    if env.bin_dir is not None:
        return repo.has_file(f"{env.bin_dir}/{tool}")
    if env.packages is not None:
        return re.search(_PACKAGE_NAME.format(re.escape(tool)), env.packages, re.M) is not None
    return re.search(rf"\b{re.escape(tool)}\b", pyproject_text) is not None


def _build(repo: RepoFiles, pyproject: Mapping[str, object], env: Environment | None) -> Check:
    sources = _sources(repo)
    exclude = f"-x {shlex.quote(COMPILEALL_EXCLUDE)} " if sources == (".",) else ""
    args = f"-q {exclude}{' '.join(shlex.quote(source) for source in sources)}"
    what = f"byte-compiles {' '.join(sources)} to catch syntax errors"
    if env is not None:
        why = f"{what}, with the project's interpreter ({env.source})"
        return Run(env.command("python", f"-m compileall {args}"), why, env.requires)
    return Run(f"python3 -m compileall {args}", f"{what}, with python3 from PATH", ("python3",))


def _lint(repo: RepoFiles, pyproject: Mapping[str, object], env: Environment | None) -> Check:
    tool, configured = _linter(repo, pyproject)
    args = "check ." if tool == "ruff" else "."
    if env is not None:
        if _has(repo, env, tool, repo.text("pyproject.toml")):
            why = f"{tool} {configured}, run in the project's environment ({env.source})"
            return Run(env.command(tool, args), why, env.requires)
        return Skip(f"skipped: {tool} is not in the project's environment ({env.source})")
    return Run(
        f"{tool} {args}", f"{tool} {configured}, from PATH (no project environment)", (tool,)
    )


def _linter(repo: RepoFiles, pyproject: Mapping[str, object]) -> tuple[str, str]:
    tool = pyproject.get("tool")
    if (isinstance(tool, dict) and "ruff" in tool) or repo.first_file(*RUFF_CONFIGS):
        return "ruff", "is configured"
    if repo.has_file(".flake8") or any(
        "[flake8]" in repo.text(name) for name in ("setup.cfg", "tox.ini")
    ):
        return "flake8", "is configured"
    return "ruff", "(no linter configured; ruff with its defaults)"


def _test(repo: RepoFiles, pyproject: Mapping[str, object], env: Environment | None) -> Check:
    if not _has_tests(repo, pyproject):
        return Skip(
            "skipped: no Python tests found (tests/, test/, conftest.py, pytest configuration, "
            "tox environments or nox sessions)"
        )
    if env is not None:
        if _has(repo, env, "pytest", repo.text("pyproject.toml")):
            why = f"pytest, run in the project's environment ({env.source})"
            return Run(env.command("pytest", "-q"), why, env.requires)
        return Skip(f"skipped: pytest is not in the project's environment ({env.source})")
    return Run("pytest -q", "pytest from PATH (no project environment)", ("pytest",))


def _has_tests(repo: RepoFiles, pyproject: Mapping[str, object]) -> bool:
    if any(repo.has_dir(name) or repo.has_file(name) for name in TEST_MARKERS):
        return True
    tool = pyproject.get("tool")
    if isinstance(tool, dict) and "pytest" in tool:
        return True
    return any(section in repo.text(name) for name, section in TEST_SECTIONS)


def _sources(repo: RepoFiles) -> tuple[str, ...]:
    if repo.has_dir("src"):
        return ("src",)
    try:
        names = os.listdir(repo.root)
    except OSError:
        names = []
    found = sorted(
        name
        for name in names
        if not name.startswith(".")
        and (repo.has_file(f"{name}/__init__.py") or (name.endswith(".py") and repo.has_file(name)))
    )
    return tuple(found) or (".",)
