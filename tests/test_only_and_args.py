"""``start PIPELINE --only STAGE`` (repeatable, comma-separated; plus what a stage needs in a
graph) and ``start PIPELINE -- ARGS`` (recorded as ``args``, given to every stage as
``CODEX_ORCHESTRATOR_ARGS``, shell-quoted), kept by ``resume``; through the real CLI."""

from __future__ import annotations

import json

import pytest

from conftest import Repo, assert_usage_error

pytestmark = pytest.mark.slow

#: A stage that prints the arguments it got, one a line, after the shell parsed them back.
SHOW_ARGS = 'eval "set -- $CODEX_ORCHESTRATOR_ARGS"; for a in "$@"; do echo "arg=$a"; done'


def _graph(repo: Repo, test_command: str = SHOW_ARGS) -> None:
    stages = [
        {"id": "build", "command": "echo built"},
        {"id": "lint", "command": "echo linted", "needs": ["build"]},
        {"id": "test", "command": test_command, "needs": ["build"]},
        {"id": "docs", "command": "echo docs"},
    ]
    repo.write_config({"defaultPipeline": "ci", "pipelines": [{"id": "ci", "stages": stages}]})


def _statuses(repo: Repo, document: dict[str, object]) -> dict[str, tuple[str, object]]:
    return {
        entry["id"]: (entry["status"], entry.get("skip_reason"))
        for entry in repo.manifest(document)["commands"]  # type: ignore[arg-type]
    }


def test_only_runs_the_stage_and_what_it_needs(repo: Repo) -> None:
    _graph(repo)
    code, document = repo.start_json("ci", "--only", "test")
    assert code == 0
    assert _statuses(repo, document) == {
        "build": ("succeeded", None),
        "lint": ("skipped", "not-selected"),
        "test": ("succeeded", None),
        "docs": ("skipped", "not-selected"),
    }
    assert repo.manifest(document)["only"] == ["test"]
    code, document = repo.start_json("ci", "--only", "lint,docs", "--only", "docs")
    assert code == 0 and repo.manifest(document)["only"] == ["lint", "docs"]
    assert [status for status, _ in _statuses(repo, document).values()] == [
        "succeeded",
        "succeeded",
        "skipped",
        "succeeded",
    ]


def test_only_in_a_sequential_pipeline_runs_that_stage_alone(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "echo a"}, {"id": "b", "command": "echo b"})
    code, document = repo.start_json("--only", "b")
    assert code == 0
    assert _statuses(repo, document) == {
        "a": ("skipped", "not-selected"),
        "b": ("succeeded", None),
    }


def test_an_unknown_stage_is_exit_2_with_did_you_mean(repo: Repo) -> None:
    _graph(repo)
    line = assert_usage_error(repo.cli("start", "ci", "--only", "tset"), "'tset'", "'ci'")
    assert "did you mean 'test'?" in line and "build, lint, test, docs" in line
    assert not (repo.root / ".runs").exists() or not any((repo.root / ".runs").rglob("*.json"))


def test_args_reach_every_stage_shell_quoted_and_resume_keeps_them(repo: Repo) -> None:
    marker = repo.root / "fail-once"
    marker.touch()
    failing_once = f"{SHOW_ARGS}; if [ -e {marker} ]; then rm {marker}; exit 1; fi"
    _graph(repo, failing_once)
    args = ["-k", "a b", "it's", "$HOME", "--", "*"]
    result = repo.cli("start", "ci", "--only", "test", "--", *args)
    assert result.returncode == 1, result.stderr
    run_id = result.stdout.split()[1].rstrip(":")
    manifest = next((repo.root / ".runs").rglob(f"{run_id}/manifest.json")).read_text()
    assert '"args": [' in manifest
    printed = [line.split("arg=", 1)[1] for line in result.stderr.splitlines() if "arg=" in line]
    assert printed == args  # the shell parses the variable back into the very same words

    resumed = repo.cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    again = [line.split("arg=", 1)[1] for line in resumed.stderr.splitlines() if "arg=" in line]
    assert again == args
    assert "[lint]" not in resumed.stderr and "[docs]" not in resumed.stderr  # still left out


def test_no_args_is_an_empty_variable(repo: Repo) -> None:
    repo.pipeline({"id": "show", "command": 'printf "[%s]\\n" "${CODEX_ORCHESTRATOR_ARGS-unset}"'})
    code, document = repo.start_json()
    assert code == 0 and repo.manifest(document)["args"] == []
    assert repo.manifest(document)["commands"][0]["summary"] == "[]"


def test_plan_only_marks_what_start_only_would_leave_out(repo: Repo) -> None:
    _graph(repo)
    plan = json.loads(repo.cli("plan", "ci", "--only", "lint", "--format", "json").stdout)
    assert {stage["id"]: stage["selected"] for stage in plan["stages"]} == {
        "build": True,
        "lint": True,
        "test": False,
        "docs": False,
    }
    text = repo.cli("plan", "ci", "--only", "lint").stdout
    assert "test: " in text and "[not selected]" in text
    assert_usage_error(repo.cli("plan", "ci", "--only", "lnt"), "did you mean 'lint'?")
