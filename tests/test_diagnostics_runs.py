"""The built-in ``diagnostics`` pipeline run for real on small repositories of each ecosystem.

Each test builds a repository, runs ``codex-orchestrator start diagnostics`` with the real
tools (tox, nox, uv, npm, pnpm, cargo, pytest, ruff), and checks the commands chosen and the
summaries recorded. A test whose toolchain is absent is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.pipelines.diagnostics import NOT_OPTED_IN
from conftest import Repo

#: The test venv's bin directory first (tox, nox, uv, pnpm, ruff, pytest are installed there
#: by .ci/run), then the machine's PATH.
TOOL_PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool, path=TOOL_PATH) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (not on PATH)"
        print(f"skipping: {reason}")
        pytest.skip(reason)


def write(root: Path, name: str, text: str = "") -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def start(repo: Repo, **env: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run the diagnostics pipeline; its exit code and its stages by id.

    The task index is touched so that spec-guard (the last stage) accepts the new sources.
    """
    write(repo.root, "tasks/index.json", '{"items": []}')
    result = repo.cli(
        "start", "diagnostics", "--format", "json", env={"PATH": TOOL_PATH, **env}, timeout=300
    )
    assert "Traceback" not in result.stderr, result.stderr
    document = json.loads(result.stdout)
    commands = {command["id"]: command for command in repo.manifest(document)["commands"]}
    return result.returncode, commands


def plan(repo: Repo, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return repo.cli("plan", "diagnostics", *args, env={"PATH": TOOL_PATH, **env})


PASSING = "def test_ok():\n    assert True\n"
FAILING = PASSING + "\n\ndef test_bad():\n    assert sum([1, 1]) == 3\n"
PYTEST_RESULT = re.compile(r"^1 failed, 1 passed in [\d.]+s$")


def python_repo(root: Path, tests: str = PASSING, pyproject: str = "") -> None:
    project = '[project]\nname = "demo"\nversion = "0"\nrequires-python = ">=3.11"\n'
    write(root, "pyproject.toml", project + pyproject)
    write(root, "src/demo/__init__.py", "VALUE = 1\n")
    write(root, "tests/test_demo.py", tests)


# --- Python --------------------------------------------------------------------------------


@pytest.mark.slow
def test_python_tools_from_path_and_the_pytest_result_line(repo: Repo) -> None:
    need("pytest", "ruff", "python3")
    python_repo(repo.root, FAILING, "[tool.ruff]\nline-length = 100\n")

    code, stages = start(repo)
    assert code == 1
    assert [stages[name]["command"] for name in ("build", "lint", "test")] == [
        "python3 -m compileall -q src",
        "ruff check .",
        "pytest -q",
    ]
    assert stages["test"]["status"] == "failed"
    assert PYTEST_RESULT.match(stages["test"]["summary"]), stages["test"]["summary"]


@pytest.mark.slow
def test_ruff_result_line_is_the_lint_summary(repo: Repo) -> None:
    need("ruff", "python3")
    python_repo(repo.root, pyproject="[tool.ruff]\nline-length = 100\n")
    write(repo.root, "src/demo/bad.py", "import os\nimport sys\n")

    code, stages = start(repo)
    assert (code, stages["lint"]["status"]) == (1, "failed")
    assert stages["lint"]["summary"] == "Found 2 errors."
    assert stages["test"]["status"] != "pending"  # test runs beside lint, after build


TOX_INI = """\
[tox]
envlist = py3, lint

[testenv]
skip_install = true
allowlist_externals = pytest
commands = pytest -q -p no:cacheprovider

[testenv:lint]
skip_install = true
allowlist_externals = ruff
commands = ruff check .
"""


@pytest.mark.slow
def test_tox_environments_run_with_tox(repo: Repo, tmp_path: Path) -> None:
    need("tox", "pytest", "ruff")
    python_repo(repo.root, FAILING)
    write(repo.root, "tox.ini", TOX_INI)

    code, stages = start(repo, TOX_WORK_DIR=str(tmp_path / "tox"))
    assert code == 1
    assert (stages["lint"]["command"], stages["lint"]["status"]) == ("tox -e lint", "succeeded")
    assert stages["test"]["command"] == "tox -e py"
    assert PYTEST_RESULT.match(stages["test"]["summary"]), stages["test"]["summary"]


NOXFILE = """\
import nox


@nox.session(venv_backend="none")
def tests(session):
    session.run("pytest", "-q", "-p", "no:cacheprovider")
"""


@pytest.mark.slow
def test_nox_sessions_run_with_nox(repo: Repo) -> None:
    need("nox", "pytest")
    python_repo(repo.root, FAILING)
    write(repo.root, "noxfile.py", NOXFILE)

    code, stages = start(repo)
    assert code == 1
    assert stages["test"]["command"] == "nox -s tests"
    assert PYTEST_RESULT.match(stages["test"]["summary"]), stages["test"]["summary"]


# An interpreter no machine here has: tox and nox skip what needs it (the tools' policy).
MISSING_PYTHON = "3.4"
SKIPPING_TOX_INI = f"""\
[tox]
envlist = lint
skip_missing_interpreters = true

[testenv:lint]
basepython = python{MISSING_PYTHON}
skip_install = true
commands = ruff check .
"""
SKIPPING_NOXFILE = f"""\
import nox

nox.options.error_on_missing_interpreters = False


@nox.session(python="{MISSING_PYTHON}")
def tests(session):
    session.run("pytest", "-q")
"""


@pytest.mark.slow
def test_tox_and_nox_skipping_for_a_missing_interpreter_is_a_skipped_stage(
    repo: Repo, tmp_path: Path
) -> None:
    need("tox", "nox")
    python_repo(repo.root)
    write(repo.root, "tox.ini", SKIPPING_TOX_INI)
    write(repo.root, "noxfile.py", SKIPPING_NOXFILE)

    _code, stages = start(repo, TOX_WORK_DIR=str(tmp_path / "tox"))
    lint, test = stages["lint"], stages["test"]
    assert (lint["command"], lint["status"]) == ("tox -e lint", "skipped")
    assert lint["summary"] == (
        f"skipped: tox skipped lint: could not find python interpreter with spec(s): "
        f"python{MISSING_PYTHON}"
    )
    assert (test["command"], test["status"]) == ("nox -s tests", "skipped")
    assert test["summary"] == (
        f"skipped: nox skipped tests: Python interpreter {MISSING_PYTHON} not found"
    )
    assert lint["skip_reason"] == test["skip_reason"] == "tool-missing"


@pytest.mark.slow
def test_uv_lock_runs_in_the_uv_environment(repo: Repo, tmp_path: Path) -> None:
    need("uv")
    python_repo(repo.root, pyproject="[tool.uv]\npackage = false\n")
    env = {"UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_OFFLINE": "1"}
    locked = subprocess.run(
        ["uv", "lock"],
        cwd=repo.root,
        env={**os.environ, "PATH": TOOL_PATH, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert locked.returncode == 0, locked.stderr

    code, stages = start(repo, **env)
    assert code == 0
    assert (stages["build"]["command"], stages["build"]["status"]) == (
        "uv run python -m compileall -q src",
        "succeeded",
    )
    assert (repo.root / ".venv").is_dir()  # uv made the project's own environment
    assert stages["test"]["status"] == "skipped"
    assert stages["test"]["summary"] == (
        "skipped: pytest is not in the project's environment (uv.lock)"
    )


def test_a_lock_file_without_its_tool_is_skipped(repo: Repo) -> None:
    python_repo(repo.root)
    write(repo.root, "poetry.lock", '[[package]]\nname = "pytest"\n')

    code, stages = start(repo, PATH="/usr/bin:/bin")
    if shutil.which("poetry", path="/usr/bin:/bin"):
        pytest.skip("poetry is installed system-wide")
    assert code == 0
    assert stages["test"]["command"] == "poetry run pytest -q"
    assert (stages["test"]["status"], stages["test"]["summary"]) == (
        "skipped",
        "skipped: poetry not found on PATH",
    )


@pytest.mark.slow
def test_dot_venv_interpreter_runs_the_tests(repo: Repo) -> None:
    python_repo(repo.root, FAILING)
    venv = repo.root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # The project's environment gets pytest from this test run's site-packages through a .pth
    # file, and a pytest script, as an install would leave.
    import pytest as installed

    site = next(venv.glob("lib/python*/site-packages"))
    (site / "test-deps.pth").write_text(str(Path(installed.__file__).parents[1]) + "\n")
    (venv / "bin" / "pytest").write_text("#!/bin/sh\n")

    code, stages = start(repo)
    assert code == 1
    assert stages["build"]["command"] == ".venv/bin/python -m compileall -q src"
    assert stages["test"]["command"] == ".venv/bin/python -m pytest -q"
    assert PYTEST_RESULT.match(stages["test"]["summary"]), stages["test"]["summary"]


@pytest.mark.slow
def test_malformed_pyproject_is_a_clear_skip(repo: Repo) -> None:
    write(repo.root, "pyproject.toml", "[project\n")

    code, stages = start(repo)
    assert code == 0
    for name in ("build", "lint", "test"):
        assert stages[name]["status"] == "skipped"
        assert stages[name]["summary"].startswith("skipped: pyproject.toml is not valid TOML")
        assert stages[name]["command"] == ""


# --- Node.js -------------------------------------------------------------------------------


NODE_TEST = """\
const test = require("node:test");
const assert = require("node:assert");
test("ok", () => {});
test("bad", () => assert.strictEqual(1, 2));
"""


def node_repo(root: Path, **scripts: str) -> None:
    write(
        root, "package.json", json.dumps({"name": "demo", "version": "1.0.0", "scripts": scripts})
    )
    write(root, "test/demo.test.js", NODE_TEST)


@pytest.mark.slow
def test_npm_scripts_and_the_node_test_result_line(repo: Repo) -> None:
    need("npm", "node")
    node_repo(repo.root, build='node -e "console.log(1)"', test="node --test test/")

    code, stages = start(repo)
    assert code == 1
    assert (stages["build"]["command"], stages["build"]["status"]) == ("npm run build", "succeeded")
    assert stages["lint"]["summary"] == "skipped: package.json has no 'lint' script"
    assert (stages["test"]["command"], stages["test"]["summary"]) == ("npm run test", "fail 1")


@pytest.mark.slow
def test_pnpm_lock_runs_with_pnpm(repo: Repo) -> None:
    need("pnpm", "node")
    node_repo(repo.root, build="node -e \"console.log('built')\"", lint="node -e 0")
    write(repo.root, "pnpm-lock.yaml", "lockfileVersion: '9.0'\n")

    code, stages = start(repo)
    assert code == 0
    assert [stages[name]["command"] for name in ("build", "lint")] == [
        "pnpm run build",
        "pnpm run lint",
    ]
    assert stages["build"]["summary"] == "built"
    assert stages["test"]["status"] == "skipped"


def test_malformed_package_json_is_a_clear_skip(repo: Repo) -> None:
    write(repo.root, "package.json", '{"scripts": {"build": "tsc",}}')

    code, stages = start(repo)
    assert code == 0
    assert stages["build"]["summary"].startswith("skipped: package.json is not valid JSON (")


# --- Rust and Go ---------------------------------------------------------------------------


CARGO_LIB = """\
pub fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[cfg(test)]
mod tests {
    #[test]
    fn ok() {
        assert_eq!(super::add(1, 1), 2);
    }

    #[test]
    fn bad() {
        assert_eq!(super::add(1, 1), 3);
    }
}
"""


def cargo_repo(root: Path, lib: str) -> None:
    write(root, "Cargo.toml", '[package]\nname = "demo"\nversion = "0.1.0"\nedition = "2021"\n')
    write(root, "src/lib.rs", lib)


@pytest.mark.slow
def test_cargo_build_clippy_test_and_the_test_result_line(repo: Repo, tmp_path: Path) -> None:
    need("cargo", "cargo-clippy")
    cargo_repo(repo.root, CARGO_LIB)

    code, stages = start(repo, CARGO_TARGET_DIR=str(tmp_path / "target"))
    assert code == 1
    assert [stages[name]["status"] for name in ("build", "lint", "test")] == [
        "succeeded",
        "succeeded",
        "failed",
    ]
    assert stages["test"]["summary"].startswith("test result: FAILED. 1 passed; 1 failed;")


@pytest.mark.slow
def test_cargo_compile_error_summary(repo: Repo, tmp_path: Path) -> None:
    need("cargo")
    cargo_repo(repo.root, "pub fn broken() -> i32 { missing }\n")

    code, stages = start(repo, CARGO_TARGET_DIR=str(tmp_path / "target"))
    assert (code, stages["build"]["status"]) == (1, "failed")
    assert stages["build"]["summary"].startswith("error: could not compile `demo` (lib)")


def test_go_build_vet_test(repo: Repo) -> None:
    need("go")
    write(repo.root, "go.mod", "module example.com/demo\n\ngo 1.20\n")
    write(repo.root, "demo.go", "package demo\n\nfunc Add(a, b int) int { return a + b }\n")
    write(
        repo.root,
        "demo_test.go",
        'package demo\n\nimport "testing"\n\nfunc TestAdd(t *testing.T) {\n'
        '\tif Add(1, 1) != 3 {\n\t\tt.Fatal("wrong")\n\t}\n}\n',
    )

    code, stages = start(repo, GOFLAGS="-count=1")
    assert code == 1
    assert stages["test"]["summary"].startswith("FAIL\texample.com/demo") or stages["test"][
        "summary"
    ].startswith("FAIL example.com/demo")


# --- Makefile, plan ------------------------------------------------------------------------


def test_makefile_target_runs_and_a_missing_target_is_explained(repo: Repo) -> None:
    need("make")
    write(repo.root, "Makefile", "build:\n\t@echo compiled\n")

    code, stages = start(repo)
    assert code == 0
    assert (stages["build"]["command"], stages["build"]["summary"]) == ("make build", "compiled")
    assert stages["test"]["summary"] == (
        "skipped: no test step found (no Makefile/justfile 'test'/'check' target; "
        "no Python, Node.js, Rust or Go project at the root)"
    )


@pytest.mark.slow
def test_spec_guard_runs_only_where_the_repository_opted_in(repo: Repo) -> None:
    need("make")
    write(repo.root, "Makefile", "build:\n\t@echo compiled\n")
    write(repo.root, "src/app.py", "VALUE = 1\n")  # a code change spec-guard would look at

    def spec_guard() -> dict[str, Any]:
        result = repo.cli("start", "diagnostics", "--format", "json", env={"PATH": TOOL_PATH})
        assert result.returncode == 0, result.stderr
        return {c["id"]: c for c in repo.manifest(json.loads(result.stdout))["commands"]}[
            "spec-guard"
        ]

    skipped = spec_guard()
    assert (skipped["status"], skipped["skip_reason"]) == ("skipped", "not-applicable")
    assert skipped["summary"] == NOT_OPTED_IN
    assert skipped["log_path"] is None  # nothing ran

    write(repo.root, "tasks/index.json", '{"items": []}')
    ran = spec_guard()
    assert (ran["status"], ran.get("skip_reason")) == ("succeeded", None)
    assert ran["log_path"] is not None


def test_plan_explains_each_choice_in_text_and_json(repo: Repo) -> None:
    python_repo(repo.root)
    write(repo.root, "tox.ini", TOX_INI)
    write(repo.root, "package.json", json.dumps({"scripts": {"build": "vite build"}}))

    text = plan(repo)
    assert text.returncode == 0, text.stderr
    assert "root project: Python (pyproject.toml, tox.ini)" in text.stdout
    assert "also found, not run: Node.js (package.json, npm: no lock file)" in text.stdout
    assert "   2. lint: tox -e lint" in text.stdout
    assert "      why: tox.ini declares a tox environment 'lint'" in text.stdout
    assert "echo" not in text.stdout

    document = json.loads(plan(repo, "--format", "json").stdout)
    lint = next(stage for stage in document["stages"] if stage["id"] == "lint")
    assert lint["why"] == "tox.ini declares a tox environment 'lint'"
    assert lint["requires"] == ["tox"]


def test_plan_shows_a_skipped_stage_by_its_reason(repo: Repo) -> None:
    text = plan(repo).stdout
    assert "   1. build: skipped: no build step found (" in text

    document = json.loads(plan(repo, "--format", "json").stdout)
    build = document["stages"][0]
    assert build["command"] is None
    assert build["skip_reason"].startswith("skipped: no build step found (")
