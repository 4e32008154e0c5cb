"""Detection of the built-in ``diagnostics`` pipeline: which command each stage gets, and why.

These build small repositories in tmp dirs and check the choices; tests/test_diagnostics_runs.py
runs them with the real tools.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest

from codex_orchestrator.pipelines.config import CONFIG_FILE, CommandStage, load_config
from codex_orchestrator.pipelines.diagnostics import builtin_diagnostics
from conftest import run_python

PYTHON = shlex.quote(sys.executable)
STAGE_IDS = ["build", "lint", "test", "spec-guard"]


def stages(root: Path) -> dict[str, CommandStage]:
    found = {}
    for stage in builtin_diagnostics(root).stages:
        assert isinstance(stage, CommandStage)
        found[stage.id] = stage
    return found


def commands(root: Path) -> dict[str, str]:
    """Each checked stage's command, or its skip reason."""
    return {
        stage_id: stage.command or f"<{stage.skip_reason}>"
        for stage_id, stage in stages(root).items()
        if stage_id != "spec-guard"
    }


def description(root: Path) -> str:
    return builtin_diagnostics(root).description or ""


def write(root: Path, name: str, text: str = "") -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def package_json(root: Path, scripts: dict[str, str], **fields: str) -> None:
    write(root, "package.json", json.dumps({"name": "demo", "scripts": scripts, **fields}))


# --- shape ---------------------------------------------------------------------------------


def test_pipeline_shape(tmp_path: Path) -> None:
    pipeline = builtin_diagnostics(tmp_path)

    assert (pipeline.id, pipeline.title, pipeline.source) == (
        "diagnostics",
        "Diagnostics",
        "builtin",
    )
    assert [stage.id for stage in pipeline.stages] == STAGE_IDS
    assert not any(stage.allow_failure for stage in stages(tmp_path).values())


def test_spec_guard_is_the_last_stage_and_runs_the_orchestrator(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    write(tmp_path, "tasks/index.json", '{"items": []}')
    spec_guard = stages(tmp_path)["spec-guard"]

    assert list(stages(tmp_path))[-1] == "spec-guard"
    assert spec_guard.command == f"{PYTHON} -m codex_orchestrator spec-guard"
    assert (spec_guard.requires, spec_guard.skip_reason) == (("git",), None)


def test_spec_guard_is_skipped_where_the_repository_did_not_opt_in(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    reason = stages(tmp_path)["spec-guard"].skip_reason
    assert reason is not None
    assert "does not use the task workflow (no tasks/index.json" in reason


def test_a_tasks_key_in_the_config_opts_in_to_spec_guard(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    write(tmp_path, CONFIG_FILE, '{"tasks": {}}')
    spec_guard = load_config(tmp_path).resolve_pipeline("diagnostics").stages[-1]
    assert isinstance(spec_guard, CommandStage) and spec_guard.skip_reason is None


def test_spec_guard_is_skipped_outside_git(tmp_path: Path) -> None:
    if any((parent / ".git").exists() for parent in tmp_path.parents):
        pytest.skip("the temporary directory is inside a git repository")
    write(tmp_path, "tasks/index.json", '{"items": []}')
    reason = stages(tmp_path)["spec-guard"].skip_reason
    assert reason is not None and "not a git repository" in reason


def test_spec_guard_runs_in_a_subdirectory_of_a_repository(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    write(tmp_path, "sub/tasks/index.json", '{"items": []}')
    assert stages(tmp_path / "sub")["spec-guard"].skip_reason is None


def test_config_pipeline_named_diagnostics_wins(tmp_path: Path) -> None:
    package_json(tmp_path, {"build": "tsc"})
    config = {"pipelines": [{"id": "diagnostics", "stages": [{"id": "x", "command": "true"}]}]}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")

    assert [stage.id for stage in load_config(tmp_path).resolve_pipeline(None).stages] == ["x"]


def test_detection_runs_nothing(tmp_path: Path) -> None:
    # Every ecosystem at once; an audit hook in a child interpreter records any process start.
    write(tmp_path, "Makefile", "test:\n\ttrue\n")
    write(tmp_path, "justfile", "lint:\n  true\n")
    write(tmp_path, "Cargo.toml", "[package]\nname = 'x'\n")
    write(tmp_path, "go.mod", "module x\n")
    write(tmp_path, "pyproject.toml", "[tool.tox]\nenv_list = ['py3']\n")
    write(tmp_path, "noxfile.py", "@nox.session\ndef lint(s): ...\n")
    write(tmp_path, "package.json", '{"scripts": {"build": "tsc"}}')
    write(tmp_path, "uv.lock", "")
    script = (
        "import sys\n"
        "events = []\n"
        "sys.addaudithook(lambda e, a: events.append(e) if e.startswith(('subprocess', 'os.exec',"
        " 'os.posix_spawn', 'os.spawn', 'os.system', 'os.fork')) else None)\n"
        "from pathlib import Path\n"
        "from codex_orchestrator.pipelines.config import load_config\n"
        "pipeline = load_config(Path(sys.argv[1])).resolve_pipeline(None)\n"
        "print(len(pipeline.stages), events)\n"
    )
    result = run_python(script, str(tmp_path))
    assert result.stdout.strip() == "4 []"


# --- nothing to detect ---------------------------------------------------------------------


def test_empty_repo_skips_each_stage_saying_what_was_looked_for(tmp_path: Path) -> None:
    found = stages(tmp_path)

    assert found["build"].skip_reason == (
        "skipped: no build step found (no Makefile/justfile 'build'/'all' target; "
        "no Python, Node.js, Rust or Go project at the root)"
    )
    assert found["test"].skip_reason == (
        "skipped: no test step found (no Makefile/justfile 'test'/'check' target; "
        "no Python, Node.js, Rust or Go project at the root)"
    )
    assert "no project files" in description(tmp_path)


def test_a_skipped_stage_has_no_command_to_show(tmp_path: Path) -> None:
    for stage_id in ("build", "lint", "test"):
        stage = stages(tmp_path)[stage_id]
        assert (stage.command, stage.why) == ("", None)
        assert stage.unavailable_reason() == stage.skip_reason


# --- Python --------------------------------------------------------------------------------


def python_repo(root: Path, pyproject: str = "") -> None:
    write(root, "pyproject.toml", '[project]\nname = "demo"\n' + pyproject)
    write(root, "src/demo/__init__.py", "VALUE = 1\n")
    write(root, "tests/test_demo.py", "def test_it():\n    assert True\n")


def test_python_without_an_environment_uses_the_tools_on_path(tmp_path: Path) -> None:
    python_repo(tmp_path)

    found = stages(tmp_path)
    assert commands(tmp_path) == {
        "build": "python3 -m compileall -q src",
        "lint": "ruff check .",
        "test": "pytest -q",
    }
    assert [found[name].requires for name in ("build", "lint", "test")] == [
        ("python3",),
        ("ruff",),
        ("pytest",),
    ]
    assert (
        found["lint"].why
        == "ruff (no linter configured; ruff with its defaults), from PATH (no project environment)"
    )
    assert "root project: Python (pyproject.toml)" in description(tmp_path)


def test_the_orchestrators_own_interpreter_never_runs_project_tools(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "tox.ini", "[tox]\nenvlist = py311\n")
    write(tmp_path, "uv.lock", 'version = 1\n[[package]]\nname = "pytest"\n')

    for stage_id in ("build", "lint", "test"):
        assert sys.executable not in stages(tmp_path)[stage_id].command


def test_uv_lock_runs_the_tools_it_locks_with_uv_run(tmp_path: Path) -> None:
    python_repo(tmp_path, "[tool.ruff]\nline-length = 100\n")
    write(
        tmp_path,
        "uv.lock",
        'version = 1\n\n[[package]]\nname = "ruff"\n\n[[package]]\nname = "pytest"\n',
    )

    found = stages(tmp_path)
    assert commands(tmp_path) == {
        "build": "uv run python -m compileall -q src",
        "lint": "uv run ruff check .",
        "test": "uv run pytest -q",
    }
    assert found["test"].requires == ("uv",)
    assert found["lint"].why == "ruff is configured, run in the project's environment (uv.lock)"


def test_a_tool_missing_from_the_lock_file_is_skipped_not_taken_from_path(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "uv.lock", 'version = 1\n[[package]]\nname = "ruff"\n')

    assert commands(tmp_path)["test"] == (
        "<skipped: pytest is not in the project's environment (uv.lock)>"
    )


def test_poetry_lock_runs_with_poetry_run(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "poetry.lock", '[[package]]\nname = "pytest"\n[[package]]\nname = "ruff"\n')

    assert commands(tmp_path) == {
        "build": "poetry run python -m compileall -q src",
        "lint": "poetry run ruff check .",
        "test": "poetry run pytest -q",
    }


def test_hatch_environments_run_with_hatch_run(tmp_path: Path) -> None:
    python_repo(tmp_path, '[tool.hatch.envs.default]\ndependencies = ["pytest", "ruff"]\n')

    assert commands(tmp_path) == {
        "build": "hatch run python -m compileall -q src",
        "lint": "hatch run ruff check .",
        "test": "hatch run pytest -q",
    }


def test_hatch_as_a_build_backend_only_is_not_an_environment(tmp_path: Path) -> None:
    python_repo(tmp_path, "[tool.hatch.version]\nsource = 'vcs'\n")

    assert commands(tmp_path)["test"] == "pytest -q"


def test_dot_venv_runs_the_tools_installed_in_it(tmp_path: Path) -> None:
    python_repo(tmp_path)
    for tool in ("python", "pytest"):
        write(tmp_path, f".venv/bin/{tool}")

    assert commands(tmp_path) == {
        "build": ".venv/bin/python -m compileall -q src",
        "lint": "<skipped: ruff is not in the project's environment (.venv)>",
        "test": ".venv/bin/python -m pytest -q",
    }


def test_flake8_configuration_picks_flake8(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "setup.cfg", "[flake8]\nmax-line-length = 100\n")

    assert commands(tmp_path)["lint"] == "flake8 ."


TOX_INI = """\
[tox]
envlist = py{311,312}, lint, type

[testenv]
commands = pytest

[testenv:lint]
commands = ruff check .
"""


@pytest.mark.parametrize(
    ("name", "text", "source"),
    [
        ("tox.ini", TOX_INI, "tox.ini"),
        (
            "tox.toml",
            'env_list = ["3.13", "lint"]\n[env.lint]\ncommands = [["ruff"]]\n',
            "tox.toml",
        ),
        ("setup.cfg", "[tox:tox]\nenvlist = py3, lint\n", "setup.cfg [tox:tox]"),
    ],
)
def test_tox_environments_are_the_projects_declared_checks(
    tmp_path: Path, name: str, text: str, source: str
) -> None:
    python_repo(tmp_path)
    write(tmp_path, "uv.lock", 'version = 1\n[[package]]\nname = "pytest"\n')
    write(tmp_path, name, text)

    found = stages(tmp_path)
    assert (found["lint"].command, found["lint"].requires) == ("tox -e lint", ("tox",))
    assert (found["test"].command, found["test"].requires) == ("tox -e py", ("tox",))
    assert found["lint"].why == f"{source} declares a tox environment 'lint'"
    # No tox environment named for a build: the project's environment (uv) builds.
    assert found["build"].command == "uv run python -m compileall -q src"


def test_a_hostile_tox_envlist_is_bounded(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "tox.ini", "[tox]\nenvlist = " + "x{1,2,3,4,5,6,7,8,9}" * 60 + ", lint\n")

    assert commands(tmp_path)["lint"] == "tox -e lint"


def test_tox_in_pyproject_legacy_ini(tmp_path: Path) -> None:
    legacy = '[tool.tox]\nlegacy_tox_ini = """\n[tox]\nenvlist = py3\n[testenv:style]\n"""\n'
    python_repo(tmp_path, legacy)

    assert commands(tmp_path)["lint"] == "tox -e style"
    assert commands(tmp_path)["test"] == "tox -e py"


NOXFILE = """\
import nox


@nox.session(python=["3.11", "3.12"])
def tests(session):
    session.run("pytest")


@nox.session(name="lint", reuse_venv=True)
@nox.parametrize("x", [1])
def run_linters(session, x):
    session.run("ruff", "check", ".")
"""


def test_nox_sessions_are_the_projects_declared_checks(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "noxfile.py", NOXFILE)

    found = stages(tmp_path)
    assert (found["lint"].command, found["test"].command) == ("nox -s lint", "nox -s tests")
    assert found["test"].why == "noxfile.py declares a nox session 'tests'"
    assert "noxfile.py" in description(tmp_path)


def test_a_makefile_target_beats_tox(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "tox.ini", TOX_INI)
    write(tmp_path, "Makefile", "lint:\n\truff check .\n")

    assert commands(tmp_path)["lint"] == "make lint"
    assert commands(tmp_path)["test"] == "tox -e py"


# tox-dev's layout (filelock, tox): a ``fix`` environment running pre-commit, a ``type`` check.
TOX_FIXER_INI = """\
[tox]
envlist = fix, type, py311

[testenv]
commands = pytest {posargs}

[testenv:fix]
deps = pre-commit
commands = pre-commit run --all-files --show-diff-on-failure

[testenv:type]
deps = mypy
commands = mypy src
"""


def test_a_tox_environment_that_rewrites_files_is_never_the_lint(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "tox.ini", TOX_FIXER_INI)

    lint = stages(tmp_path)["lint"]
    assert lint.command == "tox -e type"
    assert lint.why == (
        "tox.ini declares a tox environment 'type' (not chosen: tox environment 'fix' runs "
        "pre-commit, which rewrites files)"
    )


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("tox.ini", "[tox]\nenvlist = lint\n[testenv:lint]\ncommands = black src\n"),
        ("tox.ini", "[testenv]\ncommands = ruff check --fix .\n[testenv:style]\n"),
        (
            "tox.toml",
            'env_list = ["lint"]\n[env.lint]\ncommands = [["ruff", "format", "."], ["mypy"]]\n',
        ),
        (
            "noxfile.py",
            "import nox\n\n@nox.session\ndef lint(session):\n"
            '    session.install("pre-commit")\n'
            '    session.run("pre-commit", "run", "--all-files")\n',
        ),
        ("Makefile", "lint:\n\tisort .\n\truff check .\n"),
        ("justfile", "lint:\n    npx prettier --write .\n"),
    ],
)
def test_a_declared_fixer_is_passed_over_and_named(tmp_path: Path, name: str, text: str) -> None:
    python_repo(tmp_path, "[tool.ruff]\n")
    write(tmp_path, name, text)

    lint = stages(tmp_path)["lint"]
    assert lint.command == "ruff check ."  # the project's own check-only lint
    assert lint.why is not None and "which rewrites files" in lint.why, lint.why


@pytest.mark.parametrize(
    "text",
    [
        "[testenv:lint]\ncommands = black --check src\n    ruff format --check .\n",
        "[testenv:lint]\ndeps = black\n    pre-commit\ncommands = ruff check .\n",
        "[testenv:lint]\ncommands = isort --check-only .\n    ruff check --fix --diff .\n",
    ],
)
def test_check_only_commands_are_not_fixers(tmp_path: Path, text: str) -> None:
    python_repo(tmp_path)
    write(tmp_path, "tox.ini", text)

    assert stages(tmp_path)["lint"].command == "tox -e lint"


def test_a_fixer_test_target_falls_back_to_the_project_tests(tmp_path: Path) -> None:
    python_repo(tmp_path)
    write(tmp_path, "Makefile", "test:\n\tpre-commit run -a && pytest\n")

    test = stages(tmp_path)["test"]
    assert test.command == "pytest -q"
    assert test.why is not None and "Makefile 'test' runs pre-commit" in test.why


def test_python_repo_without_tests_skips_test(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[project]\nname = "demo"\n')

    assert commands(tmp_path)["test"].startswith("<skipped: no Python tests found (tests/, test/")


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

    assert commands(tmp_path)["test"] == "pytest -q"


def test_python_sources_without_src_are_packages_and_modules(tmp_path: Path) -> None:
    write(tmp_path, "setup.py", "")
    write(tmp_path, "pkg/__init__.py")
    write(tmp_path, "notes/readme.txt")
    write(tmp_path, "tool.py")
    write(tmp_path, ".hidden.py")

    assert commands(tmp_path)["build"] == "python3 -m compileall -q pkg setup.py tool.py"


def test_python_build_falls_back_to_the_root_without_vendored_dirs(tmp_path: Path) -> None:
    write(tmp_path, "setup.cfg", "[metadata]\nname = demo\n")

    build = commands(tmp_path)["build"]
    assert build.startswith("python3 -m compileall -q -x ") and build.endswith(" .")


def test_malformed_pyproject_skips_python_checks_but_not_declared_targets(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", "[project\nname = 'x'\n")
    write(tmp_path, "Makefile", "test:\n\tpytest\n")

    found = commands(tmp_path)
    assert found["build"].startswith("<skipped: pyproject.toml is not valid TOML (")
    assert found["build"].endswith("); fix the file>")
    assert found["test"] == "make test"


# --- Node.js -------------------------------------------------------------------------------


def test_node_repo_runs_its_scripts_with_npm(tmp_path: Path) -> None:
    package_json(tmp_path, {"build": "tsc", "lint": "eslint .", "test": "vitest run"})

    found = stages(tmp_path)
    assert commands(tmp_path) == {
        "build": "npm run build",
        "lint": "npm run lint",
        "test": "npm run test",
    }
    assert found["lint"].requires == ("npm",)
    assert found["lint"].why == "package.json script 'lint' (eslint .), run with npm (no lock file)"
    assert "root project: Node.js (package.json, npm: no lock file)" in description(tmp_path)


@pytest.mark.parametrize(
    ("lock_file", "manager"),
    [
        ("pnpm-lock.yaml", "pnpm"),
        ("yarn.lock", "yarn"),
        ("bun.lockb", "bun"),
        ("bun.lock", "bun"),
        ("package-lock.json", "npm"),
    ],
)
def test_lock_file_picks_the_package_manager(tmp_path: Path, lock_file: str, manager: str) -> None:
    package_json(tmp_path, {"test": "vitest run"})
    write(tmp_path, lock_file)

    test = stages(tmp_path)["test"]
    assert (test.command, test.requires) == (f"{manager} run test", (manager,))
    assert test.why is not None and test.why.endswith(f"run with {manager} ({lock_file})")


def test_package_manager_field_is_used_without_a_lock_file(tmp_path: Path) -> None:
    package_json(tmp_path, {"test": "vitest run"}, packageManager="pnpm@9.1.0")

    assert commands(tmp_path)["test"] == "pnpm run test"


def test_missing_scripts_and_the_npm_placeholder_are_skipped(tmp_path: Path) -> None:
    package_json(tmp_path, {"build": "tsc", "test": 'echo "Error: no test specified" && exit 1'})

    assert commands(tmp_path) == {
        "build": "npm run build",
        "lint": "<skipped: package.json has no 'lint' script>",
        "test": "<skipped: package.json 'test' script is npm's 'no test specified' placeholder>",
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "package.json is not valid JSON (Expecting property name"),
        ("[1, 2]", "package.json is not a JSON object; fix the file"),
        ('{"scripts": ["build"]}', "package.json 'scripts' is not an object; fix the file"),
        ("[" * 100_000, "package.json is not valid JSON ("),
    ],
)
def test_malformed_package_json_skips_with_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    write(tmp_path, "package.json", text)

    for reason in commands(tmp_path).values():
        assert reason.startswith(f"<skipped: {problem}")


def test_a_fifo_in_place_of_package_json_does_not_hang_detection(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "package.json")
    result: list[dict[str, str]] = []
    worker = threading.Thread(target=lambda: result.append(commands(tmp_path)), daemon=True)
    worker.start()
    worker.join(timeout=30)

    assert result, "detection blocked on the FIFO"
    assert (
        result[0]["build"] == "<skipped: package.json is unreadable: not a regular file (a FIFO)>"
    )


def test_a_link_out_of_the_root_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "package.json", json.dumps({"scripts": {"build": "evil"}}))
    root = tmp_path / "repo"
    root.mkdir()
    (root / "package.json").symlink_to(outside / "package.json")

    assert commands(root)["build"] == "<skipped: package.json leads outside the repository>"


def test_a_link_loop_is_refused_not_raised(tmp_path: Path) -> None:
    (tmp_path / "package.json").symlink_to(tmp_path / "package.json")
    (tmp_path / "Cargo.toml").symlink_to(tmp_path / "a")
    (tmp_path / "a").symlink_to(tmp_path / "Cargo.toml")

    assert commands(tmp_path)["build"].startswith("<skipped: Cargo.toml is unreadable: ")


def test_python_is_the_root_project_over_a_package_json(tmp_path: Path) -> None:
    python_repo(tmp_path)
    package_json(tmp_path, {"lint": "eslint ."})

    assert commands(tmp_path)["lint"] == "ruff check ."
    assert "also found, not run: Node.js (package.json, npm: no lock file)" in description(tmp_path)


def test_a_frontend_in_a_subfolder_is_not_the_root_project(tmp_path: Path) -> None:
    python_repo(tmp_path)
    package_json(tmp_path / "web", {"build": "vite build"})

    assert commands(tmp_path)["build"] == "python3 -m compileall -q src"
    assert "Node.js" not in description(tmp_path)


# --- Rust and Go ---------------------------------------------------------------------------


def test_cargo_project(tmp_path: Path) -> None:
    write(tmp_path, "Cargo.toml", '[package]\nname = "demo"\nversion = "0.1.0"\n')

    found = stages(tmp_path)
    assert commands(tmp_path) == {
        "build": "cargo build",
        "lint": "cargo clippy",
        "test": "cargo test",
    }
    assert found["lint"].requires == ("cargo", "cargo-clippy")


def test_malformed_cargo_toml_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, "Cargo.toml", "[package\n")

    assert commands(tmp_path)["test"].startswith("<skipped: Cargo.toml is not valid TOML (")


def test_go_module(tmp_path: Path) -> None:
    write(tmp_path, "go.mod", "module example.com/demo\n\ngo 1.22\n")

    found = stages(tmp_path)
    assert commands(tmp_path) == {
        "build": "go build ./...",
        "lint": "go vet ./...",
        "test": "go test ./...",
    }
    assert found["test"].requires == ("go",)


def test_go_mod_without_a_module_line_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, "go.mod", "go 1.22\n")

    assert commands(tmp_path)["build"] == "<skipped: go.mod has no 'module' line; fix the file>"


# --- Makefile and justfile -----------------------------------------------------------------


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


def test_makefile_targets_without_another_project(tmp_path: Path) -> None:
    write(tmp_path, "Makefile", MAKEFILE)

    found = stages(tmp_path)
    assert commands(tmp_path) == {"build": "make all", "lint": "make lint", "test": "make check"}
    assert found["build"].requires == ("make",)
    assert found["lint"].why == "Makefile declares the 'lint' target"


def test_makefile_all_is_not_a_build_beside_a_project(tmp_path: Path) -> None:
    write(tmp_path, "Makefile", MAKEFILE)
    write(tmp_path, "go.mod", "module example.com/demo\n")

    assert commands(tmp_path) == {
        "build": "go build ./...",
        "lint": "make lint",
        "test": "make check",
    }


def test_makefile_variables_are_not_targets(tmp_path: Path) -> None:
    write(tmp_path, "makefile", "build := yes\ntest ::= no\nlint ?= x\n")

    assert all(command.startswith("<skipped") for command in commands(tmp_path).values())


def test_a_makefile_without_the_targets_says_so(tmp_path: Path) -> None:
    write(tmp_path, "Makefile", "install:\n\tcp app /usr/local/bin\n")

    assert commands(tmp_path)["lint"] == (
        "<skipped: no lint step found (no Makefile/justfile 'lint' target; "
        "no Python, Node.js, Rust or Go project at the root)>"
    )


def test_justfile_recipes(tmp_path: Path) -> None:
    write(
        tmp_path,
        "justfile",
        'set shell := ["bash", "-c"]\nalias t := test\n\nbuild:\n  cargo build\n'
        "@lint *args:\n  cargo clippy {{args}}\ntest filter='': build\n  cargo test\n",
    )

    assert commands(tmp_path) == {"build": "just build", "lint": "just lint", "test": "just test"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("noxfile.py", "@nox.session\ndef lint(session):\n" + '    session.run("black", ' * 20_000),
        ("Makefile", "lint:\n\t" + '"black" ' * 100_000 + "\n"),
        ("tox.ini", "[testenv:lint]\ncommands = " + "black\n    " * 50_000),
    ],
)
def test_fixer_detection_is_bounded_on_hostile_recipes(
    tmp_path: Path, name: str, unit: str
) -> None:
    """Megabytes of tool names and unclosed calls: detection stays linear (a quadratic scan of
    these would take hours)."""
    python_repo(tmp_path)
    write(tmp_path, name, unit)
    started = time.monotonic()
    stages(tmp_path)
    assert time.monotonic() - started < 20
