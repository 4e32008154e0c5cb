"""Config keys of graph pipelines: ``needs``, ``retries``, ``retryDelaySeconds``, ``maxParallel``,
``failFast``, and the ``max_parallel`` setting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.errors import EXIT_USAGE, ConfigError
from codex_orchestrator.pipelines.config import CONFIG_FILE, CommandStage, Config, load_config
from codex_orchestrator.records.workspace import Settings


def load(root: Path, document: Any) -> Config:
    (root / CONFIG_FILE).write_text(json.dumps(document), encoding="utf-8")
    return load_config(root)


def error(root: Path, document: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(root, document)
    assert caught.value.exit_code == EXIT_USAGE
    message = str(caught.value)
    assert "\n" not in message
    prefix = f"{CONFIG_FILE}: "
    assert message.startswith(prefix)
    return message[len(prefix) :]


def stage(stage_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": stage_id, "command": "true", **extra}


def pipeline(*stages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"pipelines": [{"id": "p", "stages": list(stages), **extra}]}


def test_the_spec_example_loads(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        pipeline(
            stage("build"),
            stage("lint", needs=["build"]),
            stage("test", needs=["build"], retries=2, retryDelaySeconds=1),
            stage("guard"),
            maxParallel=4,
            failFast=False,
        ),
    )

    ci = config.pipelines["p"]
    assert (ci.max_parallel, ci.fail_fast) == (4, False)
    assert [s.needs for s in ci.stages] == [None, ("build",), ("build",), None]
    test = ci.stages[2]
    assert isinstance(test, CommandStage)
    assert (test.retries, test.retry_delay_seconds) == (2, 1.0)
    assert config.warnings == ()


def test_defaults_leave_existing_pipelines_unchanged(tmp_path: Path) -> None:
    ci = load(tmp_path, pipeline(stage("a"))).pipelines["p"]

    assert (ci.max_parallel, ci.fail_fast) == (None, False)
    assert ci.stages == (CommandStage(id="a", title="a", command="true"),)
    assert ci.stages[0].needs is None
    assert (ci.stages[0].retries, ci.stages[0].retry_delay_seconds) == (0, 1.0)


def test_subpipeline_stages_take_needs(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "pipelines": [
                {"id": "child", "stages": [stage("x")]},
                {
                    "id": "p",
                    "stages": [
                        stage("a"),
                        {"kind": "subpipeline", "id": "c", "pipeline": "child", "needs": ["a"]},
                    ],
                },
            ]
        },
    )

    assert config.pipelines["p"].stages[1].needs == ("a",)


def test_needs_inside_a_stage_set(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "stageSets": {"blt": [stage("build"), stage("lint", needs=["build"])]},
            "pipelines": [{"id": "p", "stages": [{"kind": "stage-set", "ref": "blt"}]}],
        },
    )

    assert [s.needs for s in config.pipelines["p"].stages] == [None, ("build",)]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            pipeline(stage("a"), stage("b", needs=["nope"])),
            "pipelines[0].stages[1].needs[0]: unknown stage 'nope' in needs; "
            "name a stage of this pipeline: a, b",
        ),
        (
            pipeline(stage("a", needs=["a"])),
            "pipelines[0].stages[0].needs[0]: stage 'a' needs itself; remove it from its own needs",
        ),
        (
            pipeline(stage("a", needs=["b"]), stage("b", needs=["a"])),
            "pipelines[0].stages[1].needs[0]: cycle a -> b -> a; remove one of these needs",
        ),
        (
            pipeline(stage("a", needs="b")),
            "pipelines[0].stages[0].needs: expected an array, got string; list the ids of "
            'stages of this pipeline, e.g. ["build"]',
        ),
        (
            pipeline(stage("a", needs=[1])),
            "pipelines[0].stages[0].needs[0]: expected a string, got number; list the ids of "
            'stages of this pipeline, e.g. ["build"]',
        ),
        (
            pipeline(stage("a"), stage("b", needs=["a", "a"])),
            "pipelines[0].stages[1].needs[1]: 'a' is listed twice; list each stage once",
        ),
    ],
)
def test_bad_needs(tmp_path: Path, document: Any, expected: str) -> None:
    assert error(tmp_path, document) == expected


def test_needs_naming_a_stage_of_another_pipeline(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        {
            "pipelines": [
                {"id": "ci", "stages": [stage("build")]},
                {"id": "p", "stages": [stage("test", needs=["build"])]},
            ]
        },
    )

    assert message == (
        "pipelines[1].stages[0].needs[0]: unknown stage 'build' in needs; 'build' is a stage of "
        "pipeline 'ci', and needs can only name stages of the same pipeline; run that pipeline "
        "as a subpipeline stage and need it"
    )


def test_bad_needs_in_a_stage_set_names_the_entry(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        {
            "stageSets": {"s": [stage("lint", needs=["build"])]},
            "pipelines": [{"id": "p", "stages": [{"kind": "stage-set", "ref": "s"}]}],
        },
    )

    assert message.startswith(
        "pipelines[0].stages[0] (stage set entry stageSets.s[0].needs[0]): unknown stage 'build'"
    )


def test_needs_on_a_stage_set_entry_is_refused(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        {
            "stageSets": {"s": [stage("lint")]},
            "pipelines": [{"id": "p", "stages": [{"kind": "stage-set", "ref": "s", "needs": []}]}],
        },
    )

    assert message.startswith("pipelines[0].stages[0].needs: `needs` belongs to command and")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (1.5, "must be a whole number, got 1.5"),
        (-1, "out of range, got -1"),
        (11, "out of range, got 11"),
        ("2", "expected a whole number, got string"),
        (True, "expected a whole number, got boolean"),
        (10**400, f"out of range, got {10**400}"),
    ],
)
def test_bad_retries(tmp_path: Path, value: object, problem: str) -> None:
    message = error(tmp_path, pipeline(stage("a", retries=value)))

    assert message == (
        f"pipelines[0].stages[0].retries: {problem}; give how many times to re-run a failed "
        "attempt, a whole number from 0 to 10"
    )


def test_whole_float_retries_and_limits_are_accepted(tmp_path: Path) -> None:
    ci = load(tmp_path, pipeline(stage("a", retries=10.0, retryDelaySeconds=0))).pipelines["p"]

    assert (ci.stages[0].retries, ci.stages[0].retry_delay_seconds) == (10, 0.0)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-0.5, "out of range, got -0.5"),
        (61, "out of range, got 61"),
        (None, "expected a number, got null"),
    ],
)
def test_bad_retry_delay(tmp_path: Path, value: object, problem: str) -> None:
    message = error(tmp_path, pipeline(stage("a", retryDelaySeconds=value)))

    assert message.startswith(f"pipelines[0].stages[0].retryDelaySeconds: {problem}; ")


def test_retries_belong_to_command_stages(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        {
            "pipelines": [
                {
                    "id": "p",
                    "stages": [
                        {"kind": "subpipeline", "id": "c", "pipeline": "diagnostics", "retries": 1}
                    ],
                }
            ]
        },
    )

    assert message.startswith("pipelines[0].stages[0].retries: `retries` belongs to command stages")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "out of range, got 0"),
        (2.5, "must be a whole number, got 2.5"),
        (1025, "out of range, got 1025"),
        ("4", "expected a whole number, got string"),
    ],
)
def test_bad_max_parallel(tmp_path: Path, value: object, problem: str) -> None:
    message = error(tmp_path, pipeline(stage("a"), maxParallel=value))

    assert message == (
        f"pipelines[0].maxParallel: {problem}; give how many stages may run at once, a whole "
        "number from 1 to 1024"
    )


def test_bad_fail_fast(tmp_path: Path) -> None:
    message = error(tmp_path, pipeline(stage("a"), failFast="yes"))

    assert message.startswith("pipelines[0].failFast: expected true or false, got string")


def test_max_parallel_setting_resolves_from_config_and_env(tmp_path: Path) -> None:
    config = load(tmp_path, {"settings": {"max_parallel": 3}})

    assert Settings.resolve(config.settings, env={}).max_parallel == 3
    env = {"CODEX_ORCHESTRATOR_MAX_PARALLEL": "5"}
    assert Settings.resolve(config.settings, env=env).max_parallel == 5
    assert Settings.resolve({}, env={}).max_parallel is None


@pytest.mark.parametrize("value", [0, 2.5, 5000, "x"])
def test_bad_max_parallel_setting(tmp_path: Path, value: object) -> None:
    message = error(tmp_path, {"settings": {"max_parallel": value}})

    assert message.startswith("settings.max_parallel: ")


@pytest.mark.parametrize("value", ["0", "2.5", "many", "-3"])
def test_bad_max_parallel_env(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.resolve({}, env={"CODEX_ORCHESTRATOR_MAX_PARALLEL": value})

    assert str(caught.value).startswith("environment variable CODEX_ORCHESTRATOR_MAX_PARALLEL: ")
