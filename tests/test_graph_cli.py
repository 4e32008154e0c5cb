"""The CLI on graph pipelines: ``plan`` shows the graph; bad graph input is refused up front."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import Repo


def stage(stage_id: str, command: str = "true", **extra: Any) -> dict[str, Any]:
    return {"id": stage_id, "command": command, **extra}


CI = [
    stage("build"),
    stage("lint", needs=["build"]),
    stage("test", needs=["build"], retries=2, retryDelaySeconds=1),
    stage("guard"),
]


def test_plan_shows_needs_and_levels(repo: Repo) -> None:
    repo.write_config({"pipelines": [{"id": "ci", "maxParallel": 4, "stages": CI}]})

    result = repo.cli("plan", "ci")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "   2. lint: true  (needs build)" in lines
    assert "   3. test: true  [retries 2]  (needs build)" in lines
    assert lines[-4:] == [
        "  levels (at most 4 stages at once):",
        "    1. build, guard",
        "    2. lint, test",
        "pipeline ci: 4 stages; nothing was run (plan)",
    ]


def test_plan_json_carries_the_graph(repo: Repo) -> None:
    repo.write_config({"pipelines": [{"id": "ci", "failFast": True, "stages": CI}]})

    result = repo.cli(
        "plan", "ci", "--format", "json", env={"CODEX_ORCHESTRATOR_MAX_PARALLEL": "3"}
    )

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["graph"] == {
        "parallel": True,
        "max_parallel": 3,
        "fail_fast": True,
        "levels": [["build", "guard"], ["lint", "test"]],
    }
    assert [stage["needs"] for stage in document["stages"]] == [[], ["build"], ["build"], []]
    assert document["stages"][2]["retries"] == 2
    assert document["stages"][2]["retry_delay_seconds"] == 1.0
    assert not (repo.root / ".runs").exists()


def test_plan_of_a_sequential_pipeline_is_unchanged_in_text(repo: Repo) -> None:
    repo.pipeline(stage("a"), stage("b"))

    text = repo.cli("plan").stdout
    document = json.loads(repo.cli("plan", "--format", "json").stdout)

    assert "levels" not in text
    assert "needs" not in text
    assert document["graph"]["parallel"] is False
    assert document["graph"]["levels"] == [["a"], ["b"]]
    assert [stage["needs"] for stage in document["stages"]] == [[], ["a"]]


BAD_CONFIGS = [
    pytest.param(
        [stage("a"), stage("b", needs=["nope"])],
        "pipelines[0].stages[1].needs[0]: unknown stage 'nope' in needs",
        id="unknown-need",
    ),
    pytest.param(
        [stage("a", needs=["a"])],
        "pipelines[0].stages[0].needs[0]: stage 'a' needs itself",
        id="needs-itself",
    ),
    pytest.param(
        [stage("a", needs=["c"]), stage("b", needs=["a"]), stage("c", needs=["b"])],
        "pipelines[0].stages[1].needs[0]: cycle a -> c -> b -> a",
        id="cycle",
    ),
    pytest.param(
        [stage("a", retries=11)],
        "pipelines[0].stages[0].retries: out of range, got 11",
        id="retries-range",
    ),
    pytest.param(
        [stage("a", retries=1.5)],
        "pipelines[0].stages[0].retries: must be a whole number, got 1.5",
        id="retries-fraction",
    ),
]


def assert_refused(
    repo: Repo, args: list[str], expected: str, env: dict[str, str] | None = None
) -> None:
    result = repo.cli(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    json_result = repo.cli(*args, "--format", "json", env=env)
    assert json_result.returncode == 2
    document = json.loads(json_result.stdout)
    assert document["exit_code"] == 2
    assert expected in document["error"]
    assert not (repo.root / ".runs").exists()


@pytest.mark.parametrize(("stages", "expected"), BAD_CONFIGS)
@pytest.mark.parametrize("command", ["start", "plan"])
def test_bad_graph_config_is_refused_before_anything_starts(
    repo: Repo, command: str, stages: list[dict[str, Any]], expected: str
) -> None:
    marker = repo.root / "ran"
    # every stage of the bad pipeline would leave the marker: its absence proves nothing ran
    stages = [{**item, "command": f"touch {marker}"} for item in stages]
    repo.write_config({"defaultPipeline": "main", "pipelines": [{"id": "main", "stages": stages}]})

    assert_refused(repo, [command], expected)
    assert not marker.exists()


@pytest.mark.parametrize("value", [0, 1025, 2.5, "4"])
def test_bad_max_parallel_key_is_refused(repo: Repo, value: object) -> None:
    repo.write_config({"pipelines": [{"id": "main", "maxParallel": value, "stages": [stage("a")]}]})

    assert_refused(repo, ["start", "main"], "pipelines[0].maxParallel: ")


def test_needs_naming_a_stage_of_another_pipeline_is_refused_with_a_hint(repo: Repo) -> None:
    repo.write_config(
        {
            "pipelines": [
                {"id": "ci", "stages": [stage("build")]},
                {"id": "main", "stages": [stage("test", needs=["build"])]},
            ]
        }
    )

    assert_refused(
        repo, ["start", "main"], "'build' is a stage of pipeline 'ci', and needs can only name"
    )


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "x", "2.5", "5000"])
def test_bad_max_parallel_flag_is_refused(repo: Repo, value: str) -> None:
    repo.pipeline(stage("a"))

    assert_refused(repo, ["start", "--max-parallel", value], "--max-parallel: ")


def test_bad_max_parallel_env_is_refused(repo: Repo) -> None:
    repo.pipeline(stage("a"))

    assert_refused(
        repo,
        ["start"],
        "environment variable CODEX_ORCHESTRATOR_MAX_PARALLEL: ",
        env={"CODEX_ORCHESTRATOR_MAX_PARALLEL": "lots"},
    )


def test_bad_max_parallel_setting_is_refused(repo: Repo) -> None:
    repo.pipeline(stage("a"), settings={"max_parallel": 0})

    assert_refused(repo, ["start"], "settings.max_parallel: ")


def test_builtin_diagnostics_runs_lint_and_test_after_build_and_spec_guard_at_once(
    repo: Repo,
) -> None:
    result = repo.cli("plan", "diagnostics", "--format", "json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    needs = {stage["id"]: stage["needs"] for stage in document["stages"]}
    assert needs == {"build": [], "lint": ["build"], "test": ["build"], "spec-guard": []}
    assert document["graph"]["levels"] == [["build", "spec-guard"], ["lint", "test"]]
