"""Tests for the built-in ``diagnostics`` pipeline and its repository detection."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from codex_orchestrator.config import CONFIG_FILE, CommandStage, load_config
from codex_orchestrator.diagnostics import builtin_diagnostics

PYTHON = shlex.quote(sys.executable)
SRC = str(Path(__file__).resolve().parents[1] / "src")
STAGE_IDS = ["build", "lint", "test", "spec-guard"]


def stages(root: Path) -> dict[str, CommandStage]:
    pipeline = builtin_diagnostics(root)
    found = {}
    for stage in pipeline.stages:
        assert isinstance(stage, CommandStage)
        found[stage.id] = stage
    return found


def write(root: Path, name: str, text: str = "") -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def package_json(root: Path, scripts: dict[str, str]) -> None:
    write(root, "package.json", json.dumps({"name": "demo", "scripts": scripts}))


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", command], cwd=cwd, capture_output=True, text=True, check=False
    )


# --- shape ---------------------------------------------------------------------------------


def test_pipeline_shape(tmp_path: Path) -> None:
    pipeline = builtin_diagnostics(tmp_path)

    assert (pipeline.id, pipeline.title, pipeline.source) == (
        "diagnostics",
        "Diagnostics",
        "builtin",
    )
    assert [stage.id for stage in pipeline.stages] == STAGE_IDS
    assert all(isinstance(stage, CommandStage) for stage in pipeline.stages)
    assert not any(
        stage.allow_failure for stage in pipeline.stages if isinstance(stage, CommandStage)
    )


def test_spec_guard_is_always_the_last_stage(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    assert list(stages(tmp_path))[-1] == "spec-guard"
    spec_guard = stages(tmp_path)["spec-guard"]

    assert spec_guard.command == f"{PYTHON} -m codex_orchestrator spec-guard"
    assert (spec_guard.requires, spec_guard.skip_reason) == (("git",), None)


def test_spec_guard_is_skipped_outside_git(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    if any((parent / ".git").exists() for parent in tmp_path.parents):
        pytest.skip("the temporary directory is inside a git repository")
    reason = stages(root)["spec-guard"].skip_reason
    assert reason is not None and "not a git repository" in reason


def test_spec_guard_runs_in_a_subdirectory_of_a_repository(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "sub").mkdir()
    assert stages(tmp_path / "sub")["spec-guard"].skip_reason is None


def test_load_config_uses_the_builtin_for_the_repository(tmp_path: Path) -> None:
    package_json(tmp_path, {"build": "tsc"})

    diagnostics = load_config(tmp_path).resolve_pipeline(None)
    assert diagnostics.source == "builtin"
    assert diagnostics.stages[0] == CommandStage(
        id="build", title="Build", command="npm run build", requires=("npm",)
    )


def test_config_pipeline_named_diagnostics_wins(tmp_path: Path) -> None:
    package_json(tmp_path, {"build": "tsc"})
    config = {"pipelines": [{"id": "diagnostics", "stages": [{"id": "x", "command": "true"}]}]}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")

    assert [stage.id for stage in load_config(tmp_path).resolve_pipeline(None).stages] == ["x"]


# --- empty repository ----------------------------------------------------------------------


def test_empty_repo_skips_build_lint_and_test_with_reasons(tmp_path: Path) -> None:
    found = stages(tmp_path)

    assert found["build"].skip_reason == (
        "skipped: no build step found (no package.json 'build' script, Python project "
        "or Makefile 'build'/'all' target)"
    )
    assert found["lint"].skip_reason == (
        "skipped: no lint step found (no package.json 'lint' script, Python project "
        "or Makefile 'lint' target)"
    )
    assert found["test"].skip_reason is not None
    assert found["test"].skip_reason.startswith("skipped: no tests found (no package.json 'test'")
    assert "no project files" in (builtin_diagnostics(tmp_path).description or "")


def test_skipped_stage_command_is_harmless_and_says_why(tmp_path: Path) -> None:
    build = stages(tmp_path)["build"]

    result = run(build.command, tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == build.skip_reason


# --- Python --------------------------------------------------------------------------------


def python_repo(root: Path) -> None:
    write(root, "pyproject.toml", '[project]\nname = "demo"\n')
    write(root, "src/demo/__init__.py", "VALUE = 1\n")
    write(root, "tests/test_demo.py", "def test_it():\n    assert True\n")


def test_python_repo_commands(tmp_path: Path) -> None:
    python_repo(tmp_path)
    (tmp_path / ".git").mkdir()

    found = stages(tmp_path)
    assert found["build"] == CommandStage(
        id="build", title="Build", command=f"{PYTHON} -m compileall -q src"
    )
    if find_spec("ruff") is not None:
        assert (found["lint"].command, found["lint"].requires) == (f"{PYTHON} -m ruff check .", ())
    else:
        assert (found["lint"].command, found["lint"].requires) == ("ruff check .", ("ruff",))
    assert (found["test"].command, found["test"].requires) == (f"{PYTHON} -m pytest -q", ())
    assert all(stage.skip_reason is None for stage in found.values())
    assert "detected: Python" in (builtin_diagnostics(tmp_path).description or "")


def test_python_build_and_test_commands_really_work(tmp_path: Path) -> None:
    python_repo(tmp_path)
    found = stages(tmp_path)

    assert run(found["build"].command, tmp_path).returncode == 0
    assert (tmp_path / "src" / "demo" / "__pycache__").is_dir()
    result = run(found["test"].command, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_python_build_fails_on_a_syntax_error(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "src/demo/broken.py", "def broken(:\n")

    assert run(stages(tmp_path)["build"].command, tmp_path).returncode != 0


def test_python_sources_without_src_are_packages_and_modules(tmp_path: Path) -> None:
    write(tmp_path, "setup.py", "")
    write(tmp_path, "pkg/__init__.py")
    write(tmp_path, "notes/readme.txt")
    write(tmp_path, "tool.py")
    write(tmp_path, ".hidden.py")

    assert stages(tmp_path)["build"].command == f"{PYTHON} -m compileall -q pkg setup.py tool.py"


def test_python_build_falls_back_to_the_root_without_hidden_and_vendored_dirs(
    tmp_path: Path,
) -> None:
    write(tmp_path, "setup.cfg", "[metadata]\nname = demo\n")
    write(tmp_path, "scripts/ok.py", "X = 1\n")
    for vendored in (".venv", "node_modules", "venv", "build", "dist"):
        write(tmp_path, f"{vendored}/lib/bad.py", "def bad(:\n")

    build = stages(tmp_path)["build"]
    assert build.command.startswith(f"{PYTHON} -m compileall -q -x ")
    assert build.command.endswith(" .")
    result = run(build.command, tmp_path)
    assert result.returncode == 0, result.stdout
    assert (tmp_path / "scripts" / "__pycache__").is_dir()


def test_python_repo_without_tests_skips_test(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[project]\nname = "demo"\n')

    test = stages(tmp_path)["test"]
    assert test.skip_reason is not None
    assert "Python tests (tests/, test/, conftest.py, pytest configuration)" in test.skip_reason


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("test/test_x.py", ""),
        ("conftest.py", ""),
        ("pytest.ini", "[pytest]\n"),
        ("pyproject.toml", '[project]\nname = "d"\n[tool.pytest.ini_options]\naddopts = "-q"\n'),
        ("setup.cfg", "[tool:pytest]\ntestpaths = checks\n"),
        ("tox.ini", "[pytest]\ntestpaths = checks\n"),
    ],
)
def test_python_tests_are_detected(tmp_path: Path, name: str, text: str) -> None:
    write(tmp_path, "setup.py", "")
    write(tmp_path, name, text)

    assert stages(tmp_path)["test"].command == f"{PYTHON} -m pytest -q"


def test_without_ruff_and_pytest_importable_the_stages_require_the_executables(
    tmp_path: Path,
) -> None:
    python_repo(tmp_path)
    script = (
        "import sys; from pathlib import Path; "
        "from codex_orchestrator.diagnostics import builtin_diagnostics; "
        "stages = builtin_diagnostics(Path(sys.argv[1])).stages; "
        "print([[s.command, list(s.requires)] for s in stages[1:3]])"
    )
    # -S: no site-packages, so neither ruff nor pytest can be imported.
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.strip() == str([["ruff check .", ["ruff"]], ["pytest -q", ["pytest"]]])


# --- Node ----------------------------------------------------------------------------------


def test_node_repo_runs_its_scripts(tmp_path: Path) -> None:
    package_json(tmp_path, {"build": "tsc", "lint": "eslint .", "test": "vitest run"})

    found = stages(tmp_path)
    for stage_id in ("build", "lint", "test"):
        assert found[stage_id] == CommandStage(
            id=stage_id, title=stage_id.title(), command=f"npm run {stage_id}", requires=("npm",)
        )
    assert "detected: Node.js (npm)" in (builtin_diagnostics(tmp_path).description or "")


@pytest.mark.parametrize(
    ("lock_file", "manager"),
    [("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"), ("bun.lockb", "bun"), ("bun.lock", "bun")],
)
def test_lock_file_picks_the_package_manager(tmp_path: Path, lock_file: str, manager: str) -> None:
    package_json(tmp_path, {"test": "vitest run"})
    write(tmp_path, lock_file)

    test = stages(tmp_path)["test"]
    assert (test.command, test.requires) == (f"{manager} run test", (manager,))


def test_node_repo_missing_scripts_are_skipped_with_what_is_missing(tmp_path: Path) -> None:
    package_json(tmp_path, {"build": "tsc", "test": 'echo "Error: no test specified" && exit 1'})

    found = stages(tmp_path)
    assert found["build"].command == "npm run build"
    assert found["lint"].skip_reason is not None
    assert "no package.json 'lint' script" in found["lint"].skip_reason
    assert found["test"].skip_reason is not None
    assert "no package.json 'test' script" in found["test"].skip_reason


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "package.json is not a valid JSON object"),
        ("[1, 2]", "package.json is not a valid JSON object"),
        ('{"scripts": ["build"]}', "package.json 'scripts' is not an object"),
    ],
)
def test_broken_package_json_is_named_in_the_skip_reason(
    tmp_path: Path, text: str, problem: str
) -> None:
    write(tmp_path, "package.json", text)

    build = stages(tmp_path)["build"]
    assert build.skip_reason is not None
    assert build.skip_reason.endswith(f"; {problem}")


def test_package_script_beats_python_defaults(tmp_path: Path) -> None:
    python_repo(tmp_path)
    package_json(tmp_path, {"lint": "eslint ."})

    found = stages(tmp_path)
    assert found["lint"].command == "npm run lint"
    assert found["build"].command == f"{PYTHON} -m compileall -q src"
    assert "Node.js (npm), Python" in (builtin_diagnostics(tmp_path).description or "")


# --- Makefile ------------------------------------------------------------------------------


MAKEFILE = """\
CC := gcc
FLAGS ::= -O2
.PHONY: all lint check
all: main.o
\tcc -o app main.o
lint:
\techo lint
check:: all
\t./app --self-test
"""


def test_makefile_targets_are_used_without_other_projects(tmp_path: Path) -> None:
    write(tmp_path, "Makefile", MAKEFILE)

    found = stages(tmp_path)
    assert (found["build"].command, found["build"].requires) == ("make all", ("make",))
    assert (found["lint"].command, found["lint"].requires) == ("make lint", ("make",))
    assert (found["test"].command, found["test"].requires) == ("make check", ("make",))


def test_makefile_prefers_build_and_test_targets(tmp_path: Path) -> None:
    write(tmp_path, "GNUmakefile", "all:\nbuild: all\ntest:\ncheck:\n")

    found = stages(tmp_path)
    assert (found["build"].command, found["test"].command) == ("make build", "make test")
    assert found["lint"].skip_reason is not None


def test_makefile_variables_are_not_targets(tmp_path: Path) -> None:
    write(tmp_path, "makefile", "build := yes\ntest ::= no\nlint ?= x\n")

    found = stages(tmp_path)
    assert all(found[stage_id].skip_reason for stage_id in ("build", "lint", "test"))


def test_python_defaults_beat_makefile_targets(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "Makefile", MAKEFILE)

    found = stages(tmp_path)
    assert found["build"].command == f"{PYTHON} -m compileall -q src"
    assert found["test"].command == f"{PYTHON} -m pytest -q"
