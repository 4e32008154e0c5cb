"""Bad input of every kind: exit code 2, one clear line, never a traceback, nothing written."""

from __future__ import annotations

import json

import pytest

from codex_orchestrator import cli
from conftest import Repo, assert_usage_error

BAD_IDS = ["../escape", "a/b", "", "-leading", "x" * 129, "tab\there", "dot.dot"]


@pytest.mark.parametrize("task", BAD_IDS)
def test_invalid_task_id_is_refused(repo: Repo, task: str) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    assert_usage_error(repo.cli("start", f"--task={task}"), "invalid task id")
    assert not (repo.root / ".runs").exists()


def test_invalid_task_id_from_environment(repo: Repo) -> None:
    assert_usage_error(
        repo.cli("start", env={"MCP_RUNNER_TASK_ID": "../../etc"}), "MCP_RUNNER_TASK_ID"
    )


@pytest.mark.parametrize("run_id", ["../x", "a/b", "..", "2025-10-31T22-56-34-431Z-zzzz/../x"])
def test_invalid_run_ids(repo: Repo, run_id: str) -> None:
    for command in ("status", "resume"):
        assert_usage_error(repo.cli(command, run_id), "invalid run id")


def test_unknown_run(repo: Repo) -> None:
    result = repo.cli("status", "2025-10-31T22-56-34-431Z-9574035c", "--format", "json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["exit_code"] == 2
    assert_usage_error(repo.cli("resume", "2025-10-31T22-56-34-431Z-9574035c"), "unknown run")


def test_unknown_pipeline_lists_available(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    assert_usage_error(repo.cli("start", "nope"), "unknown pipeline 'nope'", "main", "diagnostics")


def test_invalid_json_config(repo: Repo) -> None:
    (repo.root / "codex.orchestrator.json").write_text(
        '{\n  "pipelines": [\n    {"id": "x",, }\n  ]\n}\n'
    )
    assert_usage_error(repo.cli("start"), "codex.orchestrator.json:3:")
    assert_usage_error(repo.cli("plan"), "invalid JSON")


def test_ill_typed_config(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": 42})
    assert_usage_error(repo.cli("start"), "pipelines[0].stages[0].command")
    assert not (repo.root / ".runs").exists()


def test_parent_run_must_exist(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    assert_usage_error(
        repo.cli("start", "--parent-run", "2025-10-31T22-56-34-431Z-9574035c"), "unknown run"
    )


def test_usage_errors(repo: Repo) -> None:
    assert_usage_error(repo.cli("status"), "needs a run id")
    assert_usage_error(repo.cli("start", "--bogus"), "unrecognized arguments")
    result = repo.cli("start", "--bogus", "--format", "json")
    assert json.loads(result.stdout)["exit_code"] == 2


@pytest.mark.slow
def test_corrupt_manifest_is_left_untouched(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    _, doc = repo.start_json()
    path = repo.root / doc["manifest"]
    path.write_text('{"torn": ')
    assert_usage_error(repo.cli("status", doc["run_id"]), "cannot be parsed")
    assert_usage_error(repo.cli("resume", doc["run_id"]), "left untouched")
    assert path.read_text() == '{"torn": '


def test_runs_root_that_is_a_file(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    (repo.root / ".runs").write_text("not a directory")
    assert_usage_error(repo.cli("start"), "cannot create .runs/default/cli", "writable directory")


def test_missing_root_directory(repo: Repo) -> None:
    result = repo.cli("start", env={"CODEX_ORCHESTRATOR_ROOT": str(repo.root / "nowhere")})
    assert_usage_error(result, "CODEX_ORCHESTRATOR_ROOT=", "no such directory")
    assert not (repo.root / "nowhere").exists()


@pytest.mark.parametrize(
    "content",
    ['{"commands": [{}]}', "[]", '{"run_id": "x", "commands": []}'],
)
@pytest.mark.slow
def test_manifest_of_the_wrong_shape_is_reported(repo: Repo, content: str) -> None:
    repo.pipeline({"id": "one", "command": "exit 1"})
    _, doc = repo.start_json()
    path = repo.root / doc["manifest"]
    path.write_text(content)
    for command in ("status", "resume"):
        assert_usage_error(
            repo.cli(command, doc["run_id"]), doc["manifest"], "not a valid run manifest"
        )
    assert path.read_text() == content


@pytest.mark.parametrize("interval", ["0", "-1", "inf", "1e300", "nan"])
def test_watch_interval_must_be_sane(repo: Repo, interval: str) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    _, doc = repo.start_json()
    assert_usage_error(
        repo.cli("status", doc["run_id"], "--watch", f"--interval={interval}"), "--interval"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS", "1e10"),
        ("CODEX_ORCHESTRATOR_MANIFEST_THROTTLE_SECONDS", "0"),
    ],
)
def test_out_of_range_environment_settings(repo: Repo, name: str, value: str) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    assert_usage_error(repo.cli("start", env={name: value}), name, "out of range")


def test_top_level_help_describes_the_tool_to_its_user() -> None:
    shown = " ".join(cli.build_parser().format_help().split())
    assert cli.DESCRIPTION in shown
    assert cli.__doc__ is not None and cli.__doc__.splitlines()[0] not in shown
