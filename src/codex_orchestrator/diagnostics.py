"""The built-in ``diagnostics`` pipeline: build, lint, test, spec-guard.

It is used when ``codex.orchestrator.json`` defines no pipeline with id ``diagnostics``. Its
commands are chosen, when the pipeline is loaded, from the files at the repository root; they
run there, and a failing stage fails the run (no ``allowFailure``). Each stage takes the first
rule that applies (``python`` is the interpreter running the tool):

``build``
    1. ``package.json`` has a ``build`` script: ``<pm> run build``;
    2. a Python project (``pyproject.toml``, ``setup.py`` or ``setup.cfg``):
       ``python -m compileall -q <sources>``, where the sources are ``src/`` if present, else
       the top-level packages and modules, else ``.`` (skipping hidden directories,
       ``node_modules``, ``venv``, ``build`` and ``dist``);
    3. a Makefile with a ``build`` (else ``all``) target: ``make <target>``.
``lint``
    1. a ``lint`` script: ``<pm> run lint``;
    2. a Python project: ``python -m ruff check .`` when ruff is importable, else
       ``ruff check .`` (skipped when ``ruff`` is not on PATH);
    3. a Makefile ``lint`` target: ``make lint``.
``test``
    1. a ``test`` script other than npm's ``no test specified`` placeholder: ``<pm> run test``;
    2. a Python project with tests (``tests/``, ``test/``, ``conftest.py``, ``pytest.ini`` or a
       pytest section in ``pyproject.toml``, ``setup.cfg`` or ``tox.ini``):
       ``python -m pytest -q`` when pytest is importable, else ``pytest -q`` (skipped when
       ``pytest`` is not on PATH);
    3. a Makefile ``test`` (else ``check``) target: ``make <target>``.
``spec-guard``
    ``python -m codex_orchestrator spec-guard`` (needs ``git``; skipped outside a git repository,
    since it compares the change against git history).

``<pm>`` is ``pnpm``, ``yarn`` or ``bun`` when their lock file is present, else ``npm``.
A stage that needs a tool (``npm``, ``make``, ``ruff``...) lists it in ``requires``: the runner
skips it with ``skipped: <tool> not found on PATH`` when the tool is absent. When no rule
applies, the stage has a ``skip_reason`` (``skipped: no ... found (...)``, naming what was looked
for) and is skipped with it as its summary; a broken ``package.json`` is named there too.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

from codex_orchestrator.pipeline import BUILTIN_PIPELINE, CommandStage, Pipeline

LOCK_FILES = (
    ("pnpm-lock.yaml", "pnpm"),
    ("yarn.lock", "yarn"),
    ("bun.lockb", "bun"),
    ("bun.lock", "bun"),
)
PYTHON_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")
PYTEST_MARKERS = ("tests", "test", "conftest.py", "pytest.ini")
PYTEST_SECTIONS = (
    ("pyproject.toml", "[tool.pytest"),
    ("setup.cfg", "[tool:pytest]"),
    ("tox.ini", "[pytest]"),
)
MAKEFILES = ("GNUmakefile", "makefile", "Makefile")
COMPILEALL_EXCLUDE = r"[/\\](\.[^/\\]+|node_modules|venv|build|dist)[/\\]"
NPM_TEST_PLACEHOLDER = "no test specified"
MISSING = {
    "build": "skipped: no build step found (no package.json 'build' script, Python project "
    "or Makefile 'build'/'all' target)",
    "lint": "skipped: no lint step found (no package.json 'lint' script, Python project "
    "or Makefile 'lint' target)",
    "test": "skipped: no tests found (no package.json 'test' script, Python tests "
    "(tests/, test/, conftest.py, pytest configuration) or Makefile 'test'/'check' target)",
}
_MAKE_TARGET = re.compile(r"^([A-Za-z0-9][\w.-]*)[ \t]*::?(?![:=])", re.MULTILINE)


class _Choice(NamedTuple):
    """A command picked for a stage and the executables it needs on PATH."""

    command: str
    requires: tuple[str, ...] = ()


class _Repo(NamedTuple):
    """What the repository root offers to the detection rules."""

    root: Path
    scripts: Mapping[str, str]
    package_manager: str | None
    package_problem: str | None
    python: bool
    make_targets: frozenset[str]

    def kinds(self) -> list[str]:
        """Human-readable names of the detected project kinds."""
        found = []
        if self.package_manager:
            found.append(f"Node.js ({self.package_manager})")
        if self.python:
            found.append("Python")
        if self.make_targets:
            found.append("Makefile")
        return found


def builtin_diagnostics(root: Path) -> Pipeline:
    """Build the ``diagnostics`` pipeline for the repository at ``root`` (rules above)."""
    repo = _inspect(root)
    stages = (
        _stage(
            repo,
            "build",
            "Build",
            _script(repo, "build"),
            _python_build(repo),
            _make(repo, "build", "all"),
        ),
        _stage(
            repo, "lint", "Lint", _script(repo, "lint"), _python_lint(repo), _make(repo, "lint")
        ),
        _stage(
            repo,
            "test",
            "Test",
            _script(repo, "test"),
            _python_test(repo),
            _make(repo, "test", "check"),
        ),
        CommandStage(
            id="spec-guard",
            title="Spec guard",
            command=f"{_python()} -m codex_orchestrator spec-guard",
            requires=("git",),
            skip_reason=None if _in_git_repository(root) else _NOT_GIT,
        ),
    )
    detected = ", ".join(repo.kinds()) or "no project files"
    return Pipeline(
        id=BUILTIN_PIPELINE,
        title="Diagnostics",
        description=f"Build, lint, test and spec-guard the repository (detected: {detected})",
        source="builtin",
        stages=stages,
    )


def _stage(repo: _Repo, stage_id: str, title: str, *choices: _Choice | None) -> CommandStage:
    """The first applicable choice as a stage, else a stage skipped with what was looked for."""
    choice = next((choice for choice in choices if choice is not None), None)
    if choice is not None:
        return CommandStage(
            id=stage_id, title=title, command=choice.command, requires=choice.requires
        )
    reason = MISSING[stage_id]
    if repo.package_problem:
        reason = f"{reason}; {repo.package_problem}"
    return CommandStage(
        id=stage_id, title=title, command=f"echo {shlex.quote(reason)}", skip_reason=reason
    )


def _python() -> str:
    return shlex.quote(sys.executable)


# --- detection -----------------------------------------------------------------------------


def _inspect(root: Path) -> _Repo:
    scripts, manager, problem = _package_json(root)
    return _Repo(
        root=root,
        scripts=scripts,
        package_manager=manager,
        package_problem=problem,
        python=any((root / marker).is_file() for marker in PYTHON_MARKERS),
        make_targets=_make_targets(root),
    )


def _package_json(root: Path) -> tuple[Mapping[str, str], str | None, str | None]:
    """The npm scripts, the package manager (None: no package.json) and any problem found."""
    try:
        text = (root / "package.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None, None
    except (OSError, UnicodeDecodeError) as exc:
        return {}, _package_manager(root), f"package.json is unreadable: {exc}"
    manager = _package_manager(root)
    try:
        scripts = json.loads(text).get("scripts", {})
    except (ValueError, AttributeError):
        return {}, manager, "package.json is not a valid JSON object"
    if not isinstance(scripts, dict):
        return {}, manager, "package.json 'scripts' is not an object"
    return {k: v for k, v in scripts.items() if isinstance(v, str) and v.strip()}, manager, None


def _package_manager(root: Path) -> str:
    return next((pm for lock, pm in LOCK_FILES if (root / lock).is_file()), "npm")


def _make_targets(root: Path) -> frozenset[str]:
    for name in MAKEFILES:
        try:
            text = (root / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        return frozenset(_MAKE_TARGET.findall(text))
    return frozenset()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# --- rules ---------------------------------------------------------------------------------


def _script(repo: _Repo, name: str) -> _Choice | None:
    script = repo.scripts.get(name)
    if repo.package_manager is None or script is None:
        return None
    if name == "test" and NPM_TEST_PLACEHOLDER in script:
        return None
    return _Choice(f"{repo.package_manager} run {name}", (repo.package_manager,))


def _make(repo: _Repo, *targets: str) -> _Choice | None:
    target = next((target for target in targets if target in repo.make_targets), None)
    return None if target is None else _Choice(f"make {target}", ("make",))


def _python_build(repo: _Repo) -> _Choice | None:
    if not repo.python:
        return None
    sources = _python_sources(repo.root)
    exclude = f"-x {shlex.quote(COMPILEALL_EXCLUDE)} " if sources == (".",) else ""
    paths = " ".join(shlex.quote(source) for source in sources)
    return _Choice(f"{_python()} -m compileall -q {exclude}{paths}")


def _python_sources(root: Path) -> tuple[str, ...]:
    if (root / "src").is_dir():
        return ("src",)
    found = sorted(
        entry.name
        for entry in root.iterdir()
        if not entry.name.startswith(".")
        and ((entry / "__init__.py").is_file() or (entry.suffix == ".py" and entry.is_file()))
    )
    return tuple(found) or (".",)


def _python_lint(repo: _Repo) -> _Choice | None:
    if not repo.python:
        return None
    if find_spec("ruff") is not None:
        return _Choice(f"{_python()} -m ruff check .")
    return _Choice("ruff check .", ("ruff",))


def _python_test(repo: _Repo) -> _Choice | None:
    if not (repo.python and _has_python_tests(repo.root)):
        return None
    if find_spec("pytest") is not None:
        return _Choice(f"{_python()} -m pytest -q")
    return _Choice("pytest -q", ("pytest",))


def _has_python_tests(root: Path) -> bool:
    if any((root / marker).exists() for marker in PYTEST_MARKERS):
        return True
    return any(section in _read(root / name) for name, section in PYTEST_SECTIONS)


_NOT_GIT = "skipped: not a git repository (spec-guard compares changes against git history)"


def _in_git_repository(root: Path) -> bool:
    """True when ``root`` or one of its parents holds a ``.git`` directory or file."""
    return any((directory / ".git").exists() for directory in (root, *root.parents))
