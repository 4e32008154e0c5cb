"""Tests for loading and validating ``codex.orchestrator.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.errors import (
    EXIT_USAGE,
    ConfigError,
    InvalidIdError,
    UnknownPipelineError,
)
from codex_orchestrator.pipelines.config import (
    CONFIG_FILE,
    IGNORED_KEYS,
    CommandStage,
    Config,
    SubpipelineStage,
    load_config,
)
from codex_orchestrator.records.workspace import Settings
from conftest import run_python

ID_RULE = "use 1-128 characters from A-Z a-z 0-9 _ -, starting with a letter or digit"


def write(root: Path, document: Any) -> Path:
    text = document if isinstance(document, str) else json.dumps(document, indent=2)
    path = root / CONFIG_FILE
    path.write_text(text, encoding="utf-8")
    return path


def load(root: Path, document: Any) -> Config:
    write(root, document)
    return load_config(root)


def error(root: Path, document: Any) -> str:
    write(root, document)
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.exit_code == EXIT_USAGE
    return message


def command(stage_id: str = "s", **extra: Any) -> dict[str, Any]:
    return {"id": stage_id, "command": "true", **extra}


def one_pipeline(*stages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"pipelines": [{"id": "p", "stages": list(stages)}], **extra}


def stage_error(root: Path, stage: dict[str, Any]) -> str:
    return error(root, one_pipeline(stage))


# --- loading -------------------------------------------------------------------------------


def test_no_config_file_gives_only_the_builtin_diagnostics(tmp_path: Path) -> None:
    config = load_config(tmp_path)

    assert config.path is None
    assert config.default_pipeline is None
    assert list(config.pipelines) == ["diagnostics"]
    assert config.pipelines["diagnostics"].source == "builtin"
    assert config.resolve_pipeline(None).id == "diagnostics"
    assert (config.settings, config.tasks, config.warnings) == ({}, {}, ())


def test_spec_example_loads_every_field(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "defaultPipeline": "quick",
            "settings": {"heartbeat_interval_seconds": 5},
            "pipelines": [
                {
                    "id": "quick",
                    "title": "Quick checks",
                    "description": "fast ones",
                    "stages": [
                        {
                            "kind": "command",
                            "id": "lint",
                            "title": "Lint",
                            "command": "ruff check .",
                            "cwd": "sub/dir",
                            "env": {"K": "V"},
                            "allowFailure": True,
                            "summaryHint": "fixed summary",
                            "timeoutSeconds": 600,
                        },
                        {
                            "kind": "subpipeline",
                            "id": "child",
                            "title": "Child",
                            "pipeline": "other",
                            "optional": True,
                        },
                    ],
                },
                {"id": "other", "stages": [command("only")]},
            ],
        },
    )

    assert config.path == tmp_path / CONFIG_FILE
    assert config.default_pipeline == "quick"
    assert config.settings == {"heartbeat_interval_seconds": 5.0}
    assert list(config.pipelines) == ["quick", "other", "diagnostics"]
    quick = config.resolve_pipeline(None)
    assert (quick.id, quick.title, quick.description, quick.source) == (
        "quick",
        "Quick checks",
        "fast ones",
        "config",
    )
    assert quick.stages == (
        CommandStage(
            id="lint",
            title="Lint",
            command="ruff check .",
            cwd="sub/dir",
            env={"K": "V"},
            allow_failure=True,
            summary_hint="fixed summary",
            timeout_seconds=600.0,
        ),
        SubpipelineStage(id="child", title="Child", pipeline="other", optional=True),
    )
    assert config.warnings == ()


def test_defaults_kind_command_title_id_and_no_options(tmp_path: Path) -> None:
    config = load(tmp_path, one_pipeline({"id": "build", "command": "make"}))

    pipeline = config.pipelines["p"]
    assert pipeline.title == "p"
    assert pipeline.description is None
    assert (pipeline.tags, pipeline.guardrails_required, pipeline.metadata) == ((), None, {})
    assert pipeline.stages == (CommandStage(id="build", title="build", command="make"),)
    stage = pipeline.stages[0]
    assert isinstance(stage, CommandStage)
    assert stage.kind == "command"
    assert (stage.cwd, stage.env, stage.allow_failure, stage.timeout_seconds) == (
        None,
        {},
        False,
        None,
    )
    assert config.resolve_pipeline(None).id == "diagnostics"


def test_subpipeline_stage_defaults(tmp_path: Path) -> None:
    config = load(
        tmp_path, one_pipeline({"kind": "subpipeline", "id": "c", "pipeline": "diagnostics"})
    )

    assert config.pipelines["p"].stages == (
        SubpipelineStage(id="c", title="c", pipeline="diagnostics", optional=False),
    )


def test_typescript_config_loads_unchanged(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "$schema": "https://example.invalid/codex-orchestrator.schema.json",
            "stageSets": {
                "build-lint-test": [
                    {
                        "kind": "command",
                        "id": "build",
                        "title": "npm run build",
                        "command": "npm run build",
                    },
                    {
                        "kind": "command",
                        "id": "lint",
                        "title": "npm run lint",
                        "command": "npm run lint",
                    },
                    {
                        "kind": "command",
                        "id": "test",
                        "title": "npm run test",
                        "command": "npm run test",
                        "env": {"CODEX_ORCHESTRATOR_TASK_ID": "", "CODEX_ORCHESTRATOR_RUN_ID": ""},
                    },
                ],
                "spec-guard": [
                    {
                        "kind": "command",
                        "id": "spec-guard",
                        "title": "node scripts/spec-guard.mjs --dry-run",
                        "command": "node scripts/spec-guard.mjs --dry-run",
                    }
                ],
            },
            "pipelines": [
                {
                    "id": "diagnostics",
                    "title": "Diagnostics Pipeline",
                    "description": "Build, lint, test, and spec-guard the repository.",
                    "tags": ["diagnostics-primary", "diagnostics-secondary"],
                    "stages": [
                        {"kind": "stage-set", "ref": "build-lint-test"},
                        {"kind": "stage-set", "ref": "spec-guard"},
                    ],
                },
                {
                    "id": "provider-worker",
                    "title": "Provider worker",
                    "guardrailsRequired": False,
                    "metadata": {"operator_autopilot": {"enabled": True, "states": ["Ready"]}},
                    "stages": [
                        {
                            "kind": "command",
                            "id": "pause-window",
                            "title": "Sleep to allow pause",
                            "command": "sleep 120",
                            "summaryHint": "Pause window elapsed",
                            "timeoutMs": 150000,
                            "allowFailure": True,
                        },
                        {"kind": "stage-set", "ref": "spec-guard"},
                    ],
                },
            ],
        },
    )

    assert config.warnings == ()
    diagnostics = config.resolve_pipeline(None)
    assert diagnostics.source == "config"
    assert diagnostics.tags == ("diagnostics-primary", "diagnostics-secondary")
    assert [stage.id for stage in diagnostics.stages] == ["build", "lint", "test", "spec-guard"]
    test_stage = diagnostics.stages[2]
    assert isinstance(test_stage, CommandStage)
    assert test_stage.env == {"CODEX_ORCHESTRATOR_TASK_ID": "", "CODEX_ORCHESTRATOR_RUN_ID": ""}
    worker = config.pipelines["provider-worker"]
    assert worker.guardrails_required is False
    assert worker.metadata == {"operator_autopilot": {"enabled": True, "states": ["Ready"]}}
    pause = worker.stages[0]
    assert isinstance(pause, CommandStage)
    assert pause.timeout_seconds == 150.0
    assert pause.allow_failure is True
    assert pause.summary_hint == "Pause window elapsed"
    assert [stage.id for stage in worker.stages] == ["pause-window", "spec-guard"]
    assert list(config.pipelines) == ["diagnostics", "provider-worker"]


def test_config_diagnostics_replaces_the_builtin(tmp_path: Path) -> None:
    config = load(tmp_path, {"pipelines": [{"id": "diagnostics", "stages": [command("mine")]}]})

    diagnostics = config.resolve_pipeline("diagnostics")
    assert diagnostics.source == "config"
    assert [stage.id for stage in diagnostics.stages] == ["mine"]


def test_tasks_section_is_kept_raw(tmp_path: Path) -> None:
    tasks = {"mirrors": ["tasks/tasks-{task}.md", ".agent/task/{task}.md"], "extra": {"a": 1}}

    config = load(tmp_path, {"tasks": tasks})
    assert config.tasks == tasks
    assert config.mirrors == ("tasks/tasks-{task}.md", ".agent/task/{task}.md")


@pytest.mark.parametrize(
    ("mirrors", "message"),
    [
        ("docs/TASKS.md", "tasks.mirrors: expected an array, got string"),
        ([], "tasks.mirrors: must not be empty"),
        ([3], "tasks.mirrors[0]: expected a string, got number"),
        (["ok.md", ""], "tasks.mirrors[1]: must not be empty"),
        (["/etc/{task}.md"], "tasks.mirrors[0]: '/etc/{task}.md' leads outside the repository"),
        (["../x/{task}.md"], "tasks.mirrors[0]: '../x/{task}.md' leads outside the repository"),
        (["{task}/{task}.md"], "tasks.mirrors[0]: '{task}/{task}.md' has {task} more than once"),
    ],
)
def test_tasks_mirrors_are_validated_with_the_config(
    tmp_path: Path, mirrors: object, message: str
) -> None:
    assert error(tmp_path, json.dumps({"tasks": {"mirrors": mirrors}})).startswith(
        f"{CONFIG_FILE}: {message}"
    )


def test_loading_the_config_does_not_scan_the_repository(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(json.dumps(one_pipeline(command())), encoding="utf-8")
    (tmp_path / "package.json").write_text('{"scripts": {"build": "tsc"}}', encoding="utf-8")
    # An audit hook lists every file opened and directory listed under the root while loading;
    # only a lookup of the builtin "diagnostics" pipeline may look at the repository.
    script = """if True:
        import sys
        from pathlib import Path
        root = sys.argv[1]
        seen = []
        def hook(event, args):
            if event in ("open", "os.listdir", "os.scandir") and args and root in str(args[0]):
                seen.append(str(args[0])[len(root):])
        sys.addaudithook(hook)
        from codex_orchestrator.pipelines.config import load_config
        config = load_config(Path(root))
        names = list(config.pipelines)
        print("load", sorted(set(seen)), names)
        seen.clear()
        config.resolve_pipeline("diagnostics")
        print("lookup", "/package.json" in seen)
    """
    result = run_python(script, str(tmp_path))
    assert result.stdout.splitlines() == [
        f"load ['/{CONFIG_FILE}'] ['p', 'diagnostics']",
        "lookup True",
    ]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_bytes(
        b"\xef\xbb\xbf" + json.dumps(one_pipeline(command())).encode()
    )

    assert "p" in load_config(tmp_path).pipelines


def test_settings_are_validated_and_feed_settings_resolve(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {"settings": {"lock_attempts": 7, "kill_grace_seconds": 0.5, "lock_backoff_factor": 3}},
    )

    assert config.settings == {
        "lock_attempts": 7,
        "kill_grace_seconds": 0.5,
        "lock_backoff_factor": 3.0,
    }
    assert isinstance(config.settings["lock_attempts"], int)
    settings = Settings.resolve(config.settings, env={})
    assert (settings.lock_attempts, settings.kill_grace_seconds) == (7, 0.5)


def test_whole_float_lock_attempts_becomes_int(tmp_path: Path) -> None:
    assert load(tmp_path, {"settings": {"lock_attempts": 4.0}}).settings == {"lock_attempts": 4}


# --- ignored TypeScript-only keys ----------------------------------------------------------


def test_ignored_keys_include_the_typescript_only_features() -> None:
    assert {"runtimeMode", "session", "plan", "approvals", "cloud", "sandbox"} <= IGNORED_KEYS


def test_ignored_keys_warn_once_each_with_their_json_path(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "runtimeMode": "cloud",
            "pipelines": [
                {
                    "id": "p",
                    "plan": {"steps": 3},
                    "stages": [command("a", session={"id": "x", "reuse": True}, description="d")],
                }
            ],
        },
    )

    assert config.warnings == (
        f"{CONFIG_FILE}: runtimeMode: ignored; 'runtimeMode' belongs to a TypeScript "
        "codex-orchestrator feature this tool does not have",
        f"{CONFIG_FILE}: pipelines[0].plan: ignored; 'plan' belongs to a TypeScript "
        "codex-orchestrator feature this tool does not have",
        f"{CONFIG_FILE}: pipelines[0].stages[0].session: ignored; 'session' belongs to a "
        "TypeScript codex-orchestrator feature this tool does not have",
        f"{CONFIG_FILE}: pipelines[0].stages[0].description: ignored; 'description' belongs "
        "to a TypeScript codex-orchestrator feature this tool does not have",
    )
    assert config.pipelines["p"].stages == (CommandStage(id="a", title="a", command="true"),)


def test_ignored_key_inside_a_stage_set_warns_once(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "stageSets": {"set": [command("a", session={})]},
            "pipelines": [
                {"id": "p1", "stages": [{"kind": "stage-set", "ref": "set"}]},
                {"id": "p2", "stages": [{"kind": "stage-set", "ref": "set"}]},
            ],
        },
    )

    assert len(config.warnings) == 1
    assert config.warnings[0].startswith(f"{CONFIG_FILE}: stageSets.set[0].session: ignored;")


# --- invalid JSON and file-level problems --------------------------------------------------


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    text = '{\n  "pipelines": [\n    {"id": "a" "stages": []}\n  ]\n}\n'

    assert error(tmp_path, text) == (
        f"{CONFIG_FILE}:3:16: invalid JSON: Expecting ',' delimiter; "
        "fix the JSON syntax at that position"
    )


def test_empty_file_is_invalid_json(tmp_path: Path) -> None:
    assert error(tmp_path, "").startswith(f"{CONFIG_FILE}:1:1: invalid JSON: Expecting value; ")


def test_trailing_comma_is_invalid_json(tmp_path: Path) -> None:
    message = error(tmp_path, '{"pipelines": [],\n}')

    assert message.startswith(f"{CONFIG_FILE}:2:1: invalid JSON: ")


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_bytes(b'{"a": "\xff"}')

    with pytest.raises(ConfigError, match=r"not valid UTF-8 \(byte 7\); save the file as UTF-8"):
        load_config(tmp_path)


def test_unreadable_config_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).mkdir()

    with pytest.raises(
        ConfigError, match=rf"^{CONFIG_FILE}: cannot read: .*; make it a readable file$"
    ):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "got"), [("[]", "array"), ("null", "null"), ('"x"', "string"), ("3", "number")]
)
def test_top_level_must_be_an_object(tmp_path: Path, text: str, got: str) -> None:
    assert error(tmp_path, text) == (
        f"{CONFIG_FILE}: top level: expected an object, got {got}; make the file one JSON object"
    )


# --- unknown and misplaced keys ------------------------------------------------------------


def test_unknown_stage_key_suggests_the_nearest(tmp_path: Path) -> None:
    document = one_pipeline(command("a"), {"id": "b", "comand": "ls"})

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: pipelines[0].stages[1].comand: unknown key; did you mean 'command'?"
    )


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"pipeline": []}, "pipeline: unknown key; did you mean 'pipelines'?"),
        ({"defaultPipline": "x"}, "defaultPipline: unknown key; did you mean 'defaultPipeline'?"),
        ({"stagesets": {}}, "stagesets: unknown key; did you mean 'stageSets'?"),
        (
            {"pipelines": [{"id": "p", "stage": []}]},
            "pipelines[0].stage: unknown key; did you mean 'stages'?",
        ),
        (
            one_pipeline(command(allowfailure=True)),
            "allowfailure: unknown key; did you mean 'allowFailure'?",
        ),
        (one_pipeline(command(timeout=5)), "timeout: unknown key; did you mean 'timeoutMs'?"),
        (
            {"settings": {"heartbeat_interval": 1}},
            "settings.heartbeat_interval: unknown setting; "
            "did you mean 'heartbeat_interval_seconds'?",
        ),
    ],
)
def test_unknown_keys_suggest_a_valid_key(tmp_path: Path, document: Any, expected: str) -> None:
    message = error(tmp_path, document)

    assert message.startswith(f"{CONFIG_FILE}: ")
    assert message.endswith(expected)


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path: Path) -> None:
    assert error(tmp_path, {"zzz": 1}) == (
        f"{CONFIG_FILE}: zzz: unknown key; remove it (valid keys: $schema, defaultPipeline, "
        "pipelines, settings, stageSets, tasks)"
    )


def test_odd_key_names_are_quoted_in_the_json_path(tmp_path: Path) -> None:
    message = error(tmp_path, {"pipelines": [{"id": "p", "stages": [command()], "a b": 1}]})

    assert message.startswith(f'{CONFIG_FILE}: pipelines[0]["a b"]: unknown key; ')


@pytest.mark.parametrize(
    ("stage", "key", "expected"),
    [
        (
            {"kind": "subpipeline", "id": "s", "pipeline": "diagnostics", "allowFailure": True},
            "allowFailure",
            '`allowFailure` belongs to command stages; remove it, or set "kind": "command"',
        ),
        (
            {"kind": "subpipeline", "id": "s", "pipeline": "diagnostics", "cwd": "x"},
            "cwd",
            '`cwd` belongs to command stages; remove it, or set "kind": "command"',
        ),
        (
            command(pipeline="diagnostics"),
            "pipeline",
            '`pipeline` belongs to subpipeline stages; remove it, or set "kind": "subpipeline"',
        ),
        (
            command(optional=True),
            "optional",
            '`optional` belongs to subpipeline stages; remove it, or set "kind": "subpipeline"',
        ),
        (
            command(ref="x"),
            "ref",
            '`ref` belongs to stage-set stages; remove it, or set "kind": "stage-set"',
        ),
        (
            {"kind": "stage-set", "ref": "x", "id": "s"},
            "id",
            "`id` belongs to command and subpipeline stages; "
            "a stage-set entry takes only `kind` and `ref`",
        ),
    ],
)
def test_key_of_another_stage_kind_is_an_error(
    tmp_path: Path, stage: dict[str, Any], key: str, expected: str
) -> None:
    document = one_pipeline(stage, stageSets={"x": [command("y")]})

    assert error(tmp_path, document) == f"{CONFIG_FILE}: pipelines[0].stages[0].{key}: {expected}"


# --- types and values ----------------------------------------------------------------------


def test_spec_example_of_a_wrong_type(tmp_path: Path) -> None:
    document = one_pipeline(command("a"), command("b"), {"id": "c", "command": 42})

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: pipelines[0].stages[2].command: expected a string, got number; "
        "give the shell command to run"
    )


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        (
            command(allowFailure="yes"),
            "allowFailure: expected true or false, got string; use true or false",
        ),
        (
            command(allowFailure=1),
            "allowFailure: expected true or false, got number; use true or false",
        ),
        (
            command(timeoutSeconds=True),
            "timeoutSeconds: expected a number, got boolean; "
            "give the timeout in seconds, above 0 and at most 604800",
        ),
        (
            command(timeoutSeconds="10"),
            "timeoutSeconds: expected a number, got string; "
            "give the timeout in seconds, above 0 and at most 604800",
        ),
        (
            command(timeoutSeconds=0),
            "timeoutSeconds: must be greater than 0, got 0; "
            "give the timeout in seconds, above 0 and at most 604800",
        ),
        (
            command(timeoutMs=-5),
            "timeoutMs: must be greater than 0, got -5; "
            "give the timeout in milliseconds, above 0 and at most 6.048e+08",
        ),
        (
            command(timeoutSeconds=10**400),
            "timeoutSeconds: is far too large; give the timeout in seconds, above 0 and at most 604800",
        ),
        (
            command(timeoutSeconds=1e9),
            "timeoutSeconds: must be at most 604800, got 1000000000.0; ",
        ),
        (
            command(command="echo a\u0000b"),
            "command: contains a NUL character",
        ),
        (
            command(env={"K": "a\u0000b"}),
            "env.K: contains a NUL character",
        ),
        (
            command(cwd="sub\u0000dir"),
            "cwd: contains a NUL character",
        ),
        (
            command(timeoutSeconds=1, timeoutMs=1000),
            "timeoutMs: timeoutSeconds is also set; keep only one of them",
        ),
        (
            command(env=["K=V"]),
            'env: expected an object, got array; give an object of strings, e.g. {"KEY": "value"}',
        ),
        (
            command(env={"K": 1}),
            "env.K: expected a string, got number; environment values must "
            'be strings; quote it, e.g. "1"',
        ),
        (command(env={"K": None}), "env.K: expected a string, got null; "),
        (
            command(env={"A=B": "x"}),
            "env[\"A=B\"]: invalid environment variable name 'A=B'; use a name without '='",
        ),
        (command(summaryHint=3), "summaryHint: expected a string, got number; give a string"),
        (
            command(title=7),
            "title: expected a string, got number; give a short human-readable title",
        ),
        (command(title=" "), "title: must not be empty; give a short human-readable title"),
        (
            command(cwd=5),
            "cwd: expected a string, got number; "
            "give a directory inside the repository, relative to its root",
        ),
        (
            {"id": "s", "command": "   "},
            "command: must not be empty; give the shell command to run",
        ),
        ({"id": "s"}, "command: missing required key; give the shell command to run"),
        ({"command": "true"}, "id: missing required key; give the stage an id"),
        (
            {"kind": "subpipeline", "id": "s"},
            "pipeline: missing required key; name the pipeline to run as a child",
        ),
        (
            {"kind": "subpipeline", "id": "s", "pipeline": "diagnostics", "optional": "no"},
            "optional: expected true or false, got string; use true or false",
        ),
        ({"kind": "stage-set"}, "ref: missing required key; name the stage set to insert"),
        ({"kind": "stage-set", "ref": 3}, "ref: expected a string, got number; name a stage set"),
        (
            {"kind": "shell", "id": "s"},
            'kind: unknown stage kind \'shell\'; use one of: "command", "subpipeline", "stage-set"',
        ),
        ({"kind": None, "id": "s"}, "kind: expected a string, got null; use one of: "),
    ],
)
def test_stage_field_errors(tmp_path: Path, stage: dict[str, Any], expected: str) -> None:
    message = stage_error(tmp_path, stage)

    assert message.startswith(f"{CONFIG_FILE}: pipelines[0].stages[0].{expected}")


def test_a_stage_must_be_an_object(tmp_path: Path) -> None:
    assert error(tmp_path, {"pipelines": [{"id": "p", "stages": ["npm test"]}]}) == (
        f"{CONFIG_FILE}: pipelines[0].stages[0]: expected an object, got string; "
        "give each stage as an object"
    )


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        ({"stages": [command()]}, "pipelines[0].id: missing required key; give the pipeline an id"),
        (
            {"id": "p"},
            "pipelines[0].stages: missing required key; give the pipeline a list of stages",
        ),
        (
            {"id": "p", "stages": []},
            "pipelines[0].stages: a pipeline needs at least one stage; add a stage",
        ),
        (
            {"id": "p", "stages": {}},
            "pipelines[0].stages: expected an array, got object; give a list of stage objects",
        ),
        (
            {"id": "p", "stages": [command()], "tags": "ci"},
            "pipelines[0].tags: expected an array, got string; give a list of strings",
        ),
        (
            {"id": "p", "stages": [command()], "tags": ["ok", 1]},
            "pipelines[0].tags[1]: expected a string, got number; give a string",
        ),
        (
            {"id": "p", "stages": [command()], "metadata": []},
            "pipelines[0].metadata: expected an object, got array; give an object",
        ),
        (
            {"id": "p", "stages": [command()], "guardrailsRequired": "false"},
            "pipelines[0].guardrailsRequired: expected true or false, got string; "
            "use true or false",
        ),
        (
            {"id": "p", "stages": [command()], "description": 1},
            "pipelines[0].description: expected a string, got number; give a string",
        ),
        (
            {"id": "p", "stages": [command()], "title": ""},
            "pipelines[0].title: must not be empty; ",
        ),
        (
            "quick",
            "pipelines[0]: expected an object, got string; "
            "give each pipeline as an object with an id and stages",
        ),
    ],
)
def test_pipeline_field_errors(tmp_path: Path, pipeline: Any, expected: str) -> None:
    assert error(tmp_path, {"pipelines": [pipeline]}).startswith(f"{CONFIG_FILE}: {expected}")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"pipelines": {}},
            "pipelines: expected an array, got object; give a list of pipeline objects",
        ),
        ({"settings": []}, "settings: expected an object, got array; give an object of tunables"),
        ({"tasks": "x"}, "tasks: expected an object, got string; give an object"),
        (
            {"stageSets": []},
            "stageSets: expected an object, got array; map each stage-set name to a list of stages",
        ),
        (
            {"stageSets": {"s": {}}},
            "stageSets.s: expected an array, got object; give the stage set as a list of stages",
        ),
        ({"$schema": 1}, "$schema: expected a string, got number; give a string"),
        ({"defaultPipeline": 1}, "defaultPipeline: expected a string, got number; "),
    ],
)
def test_top_level_section_type_errors(tmp_path: Path, document: Any, expected: str) -> None:
    assert error(tmp_path, document).startswith(f"{CONFIG_FILE}: {expected}")


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"heartbeat_interval_seconds": 0},
            "heartbeat_interval_seconds: 0 is out of range; give a number from 0.05 to 3600",
        ),
        ({"kill_grace_seconds": -1.5}, "kill_grace_seconds: -1.5 is out of range; "),
        (
            {"heartbeat_interval_seconds": 1e300},
            "heartbeat_interval_seconds: 1e+300 is out of range; ",
        ),
        ({"lock_attempts": 10**400}, "lock_attempts: "),
        (
            {"lock_attempts": 101},
            "lock_attempts: 101 is out of range; give a positive whole number",
        ),
        (
            {"manifest_throttle_seconds": True},
            "manifest_throttle_seconds: expected a number, got boolean; give a positive number",
        ),
        ({"lock_max_delay_ms": "100"}, "lock_max_delay_ms: expected a number, got string; "),
        (
            {"lock_attempts": 2.5},
            "lock_attempts: 2.5 is not a whole number; give a positive whole number of at most 100",
        ),
        (
            {"lock_attempts": 0},
            "lock_attempts: 0 is out of range; give a positive whole number of at most 100",
        ),
        (
            {"nope": 1},
            "nope: unknown setting; remove it (valid keys: cache, cache_dir, cache_max_bytes, ",
        ),
    ],
)
def test_settings_errors(tmp_path: Path, settings: dict[str, Any], expected: str) -> None:
    assert error(tmp_path, {"settings": settings}).startswith(f"{CONFIG_FILE}: settings.{expected}")


# --- ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["a/b", "../x", "", "-lead", "a b", "x" * 129, "ta\tb"])
def test_invalid_pipeline_id_names_the_rule(tmp_path: Path, bad_id: str) -> None:
    message = error(tmp_path, {"pipelines": [{"id": bad_id, "stages": [command()]}]})

    assert message == f"{CONFIG_FILE}: pipelines[0].id: invalid pipeline id {bad_id!r}; {ID_RULE}"


def test_invalid_stage_id_names_the_rule(tmp_path: Path) -> None:
    assert stage_error(tmp_path, command("../etc")) == (
        f"{CONFIG_FILE}: pipelines[0].stages[0].id: invalid stage id '../etc'; {ID_RULE}"
    )


def test_non_string_id_names_the_rule(tmp_path: Path) -> None:
    assert stage_error(tmp_path, command(5)) == (
        f"{CONFIG_FILE}: pipelines[0].stages[0].id: expected a string, got number; "
        f"give the stage id as a string; {ID_RULE}"
    )


def test_invalid_subpipeline_reference_names_the_rule(tmp_path: Path) -> None:
    stage = {"kind": "subpipeline", "id": "c", "pipeline": "a/b"}

    assert stage_error(tmp_path, stage) == (
        f"{CONFIG_FILE}: pipelines[0].stages[0].pipeline: invalid pipeline id 'a/b'; {ID_RULE}"
    )


def test_duplicate_pipeline_ids(tmp_path: Path) -> None:
    document = {
        "pipelines": [{"id": "a", "stages": [command()]}, {"id": "a", "stages": [command()]}]
    }

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: pipelines[1].id: duplicate pipeline id 'a' (first at pipelines[0]); "
        "give each pipeline a unique id"
    )


def test_duplicate_stage_ids(tmp_path: Path) -> None:
    assert error(tmp_path, one_pipeline(command("a"), command("b"), command("a"))) == (
        f"{CONFIG_FILE}: pipelines[0].stages[2].id: duplicate stage id 'a' "
        "(first at pipelines[0].stages[0].id); give each stage of a pipeline a unique id"
    )


def test_duplicate_stage_id_brought_by_a_stage_set(tmp_path: Path) -> None:
    document = one_pipeline(
        command("build"), {"kind": "stage-set", "ref": "blt"}, stageSets={"blt": [command("build")]}
    )

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: pipelines[0].stages[1] (stage set entry stageSets.blt[0].id): duplicate "
        "stage id 'build' (first at pipelines[0].stages[0].id); "
        "give each stage of a pipeline a unique id"
    )


def test_same_stage_id_in_different_pipelines_is_fine(tmp_path: Path) -> None:
    document = {
        "pipelines": [{"id": "a", "stages": [command("x")]}, {"id": "b", "stages": [command("x")]}]
    }

    assert list(load(tmp_path, document).pipelines) == ["a", "b", "diagnostics"]


# --- stage sets ----------------------------------------------------------------------------


def test_stage_set_expands_in_place(tmp_path: Path) -> None:
    document = one_pipeline(
        command("first"),
        {"kind": "stage-set", "ref": "pair"},
        command("last"),
        stageSets={
            "pair": [command("one"), {"kind": "subpipeline", "id": "two", "pipeline": "other"}]
        },
    )
    document["pipelines"].append({"id": "other", "stages": [command()]})

    stages = load(tmp_path, document).pipelines["p"].stages
    assert [(stage.id, stage.kind) for stage in stages] == [
        ("first", "command"),
        ("one", "command"),
        ("two", "subpipeline"),
        ("last", "command"),
    ]


def test_unknown_stage_set_lists_the_available_ones(tmp_path: Path) -> None:
    document = one_pipeline(
        {"kind": "stage-set", "ref": "nope"}, stageSets={"b": [command()], "a": [command()]}
    )

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: pipelines[0].stages[0].ref: unknown stage set 'nope'; use one of: b, a"
    )


def test_stage_set_reference_without_stage_sets(tmp_path: Path) -> None:
    assert stage_error(tmp_path, {"kind": "stage-set", "ref": "x"}) == (
        f"{CONFIG_FILE}: pipelines[0].stages[0].ref: unknown stage set 'x'; "
        "define it under stageSets"
    )


def test_stage_sets_cannot_nest(tmp_path: Path) -> None:
    document = {
        "stageSets": {"inner": [command()], "outer": [{"kind": "stage-set", "ref": "inner"}]}
    }

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: stageSets.outer[0].kind: a stage set cannot contain another stage set; "
        "list its stages directly"
    )


def test_stage_set_members_are_validated_even_if_unused(tmp_path: Path) -> None:
    document = {"stageSets": {"s": [{"id": "x", "command": 1}]}}

    assert error(tmp_path, document).startswith(
        f"{CONFIG_FILE}: stageSets.s[0].command: expected a string, got number; "
    )


def test_pipeline_of_only_an_empty_stage_set_has_no_stages(tmp_path: Path) -> None:
    document = one_pipeline({"kind": "stage-set", "ref": "empty"}, stageSets={"empty": []})

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: pipelines[0].stages: a pipeline needs at least one stage; add a stage"
    )


# --- sub-pipelines and the default pipeline ------------------------------------------------


def sub(stage_id: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "subpipeline", "id": stage_id, "pipeline": target, **extra}


def test_unknown_subpipeline_lists_available_pipelines(tmp_path: Path) -> None:
    document = {
        "pipelines": [
            {"id": "a", "stages": [command()]},
            {"id": "b", "stages": [command(), sub("c", "ghost")]},
        ]
    }

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: pipelines[1].stages[1].pipeline: unknown pipeline 'ghost'; "
        "use one of: a, b, diagnostics"
    )


def test_subpipeline_of_the_builtin_diagnostics_is_fine(tmp_path: Path) -> None:
    config = load(tmp_path, one_pipeline(sub("diag", "diagnostics", optional=True)))

    assert config.pipelines["p"].stages[0] == SubpipelineStage("diag", "diag", "diagnostics", True)


@pytest.mark.parametrize(
    ("graph", "where", "cycle"),
    [
        ({"a": ["a"]}, "pipelines[0].stages[1].pipeline", "a -> a"),
        ({"a": ["b"], "b": ["a"]}, "pipelines[1].stages[1].pipeline", "a -> b -> a"),
        ({"a": ["b"], "b": ["c"], "c": ["b"]}, "pipelines[2].stages[1].pipeline", "b -> c -> b"),
        (
            {"x": [], "a": ["b"], "b": ["c"], "c": ["a"]},
            "pipelines[3].stages[1].pipeline",
            "a -> b -> c -> a",
        ),
    ],
)
def test_subpipeline_cycles_are_refused(
    tmp_path: Path, graph: dict[str, list[str]], where: str, cycle: str
) -> None:
    document = {
        "pipelines": [
            {"id": name, "stages": [command(), *(sub(f"to-{child}", child) for child in children)]}
            for name, children in graph.items()
        ]
    }

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: {where}: sub-pipeline cycle {cycle}; "
        "remove one of these sub-pipeline stages"
    )


def test_cycle_through_a_stage_set_is_refused(tmp_path: Path) -> None:
    document = {
        "stageSets": {"call-a": [sub("back", "a")]},
        "pipelines": [{"id": "a", "stages": [{"kind": "stage-set", "ref": "call-a"}]}],
    }

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: stageSets.call-a[0].pipeline: sub-pipeline cycle a -> a; "
        "remove one of these sub-pipeline stages"
    )


def test_diamond_of_subpipelines_is_not_a_cycle(tmp_path: Path) -> None:
    document = {
        "pipelines": [
            {"id": "a", "stages": [sub("b", "b"), sub("c", "c")]},
            {"id": "b", "stages": [sub("d", "d")]},
            {"id": "c", "stages": [sub("d", "d")]},
            {"id": "d", "stages": [command()]},
        ]
    }

    assert list(load(tmp_path, document).pipelines) == ["a", "b", "c", "d", "diagnostics"]


def test_unknown_default_pipeline(tmp_path: Path) -> None:
    document = one_pipeline(command(), defaultPipeline="quick")

    assert error(tmp_path, document) == (
        f"{CONFIG_FILE}: defaultPipeline: unknown pipeline 'quick'; use one of: p, diagnostics"
    )


def test_invalid_default_pipeline_id(tmp_path: Path) -> None:
    assert error(tmp_path, {"defaultPipeline": "../x"}) == (
        f"{CONFIG_FILE}: defaultPipeline: invalid pipeline id '../x'; {ID_RULE}"
    )


def test_default_pipeline_may_be_the_builtin(tmp_path: Path) -> None:
    config = load(tmp_path, one_pipeline(command(), defaultPipeline="diagnostics"))

    assert config.resolve_pipeline(None).source == "builtin"


# --- resolve_pipeline ----------------------------------------------------------------------


def test_resolve_unknown_pipeline_lists_available(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {"pipelines": [{"id": "a", "stages": [command()]}, {"id": "b", "stages": [command()]}]},
    )

    with pytest.raises(UnknownPipelineError) as caught:
        config.resolve_pipeline("x")
    assert str(caught.value) == (
        "unknown pipeline 'x'; available: a, b, diagnostics (see: codex-orchestrator pipelines)"
    )
    assert caught.value.exit_code == EXIT_USAGE


def test_resolve_invalid_pipeline_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidIdError, match=r"^invalid pipeline id '\.\./x'"):
        load_config(tmp_path).resolve_pipeline("../x")


def test_resolve_by_name_beats_the_default(tmp_path: Path) -> None:
    config = load(tmp_path, one_pipeline(command(), defaultPipeline="p"))

    assert config.resolve_pipeline("diagnostics").id == "diagnostics"
    assert config.resolve_pipeline(None).id == "p"


# --- cwd -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cwd", ["sub/dir", ".", "sub/../other", "./a"])
def test_cwd_inside_the_root_is_accepted(tmp_path: Path, cwd: str) -> None:
    stage = load(tmp_path, one_pipeline(command(cwd=cwd))).pipelines["p"].stages[0]

    assert isinstance(stage, CommandStage)
    assert stage.cwd == cwd


@pytest.mark.parametrize("cwd", ["..", "../x", "a/../../x", "./../.."])
def test_cwd_escaping_with_dotdot_is_refused(tmp_path: Path, cwd: str) -> None:
    assert stage_error(tmp_path, command(cwd=cwd)) == (
        f"{CONFIG_FILE}: pipelines[0].stages[0].cwd: {cwd!r} leads outside the repository root; "
        "give a directory inside the repository, relative to its root"
    )


def test_absolute_cwd_is_refused(tmp_path: Path) -> None:
    assert stage_error(tmp_path, command(cwd=str(tmp_path))) == (
        f"{CONFIG_FILE}: pipelines[0].stages[0].cwd: absolute path {str(tmp_path)!r} is not "
        "allowed; give a directory inside the repository, relative to its root"
    )


def test_cwd_through_a_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    root.mkdir()
    (outside / "deep").mkdir(parents=True)
    os.symlink(outside, root / "link")

    for cwd in ("link", "link/deep", "link/not-yet"):
        message = stage_error(root, command(cwd=cwd))
        assert message.startswith(
            f"{CONFIG_FILE}: pipelines[0].stages[0].cwd: {cwd!r} leads outside the repository root"
        )


def test_cwd_through_a_symlink_inside_the_root_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")

    stage = load(tmp_path, one_pipeline(command(cwd="alias"))).pipelines["p"].stages[0]
    assert isinstance(stage, CommandStage)
    assert stage.cwd == "alias"


def test_cwd_checked_against_a_symlinked_root(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "real", tmp_path / "root-link")

    stage = load(tmp_path / "root-link", one_pipeline(command(cwd="sub"))).pipelines["p"].stages[0]
    assert isinstance(stage, CommandStage)
    assert stage.cwd == "sub"


def test_empty_cwd_is_refused(tmp_path: Path) -> None:
    assert stage_error(tmp_path, command(cwd="")).startswith(
        f"{CONFIG_FILE}: pipelines[0].stages[0].cwd: must not be empty; "
    )


def test_resolve_empty_pipeline_name_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidIdError, match=r"^invalid pipeline id ''"):
        load_config(tmp_path).resolve_pipeline("")


def test_an_ignored_key_warns_once_wherever_it_appears(tmp_path: Path) -> None:
    stage = {"id": "a", "command": "true", "runtimeMode": "cloud"}
    config = load(
        tmp_path,
        {"runtimeMode": "x", "pipelines": [{"id": "p", "runtimeMode": "y", "stages": [stage]}]},
    )
    assert config.warnings == (
        f"{CONFIG_FILE}: runtimeMode (and 2 more places): ignored; 'runtimeMode' belongs to a "
        "TypeScript codex-orchestrator feature this tool does not have",
    )


def test_number_literal_beyond_the_digit_limit(tmp_path: Path) -> None:
    text = '{"settings": {"lock_attempts": ' + "9" * 5000 + "}}"
    message = error(tmp_path, text)
    assert message.startswith(f"{CONFIG_FILE}: invalid JSON value (")
    assert message.endswith("use numbers of ordinary size")


def test_unused_stage_set_with_unknown_subpipeline_is_refused(tmp_path: Path) -> None:
    document = {
        "stageSets": {"spare": [{"kind": "subpipeline", "id": "kid", "pipeline": "ghost"}]},
        "pipelines": [{"id": "p", "stages": [{"id": "a", "command": "true"}]}],
    }
    assert error(tmp_path, document).startswith(
        f"{CONFIG_FILE}: stageSets.spare[0].pipeline: unknown pipeline 'ghost'; use one of: p, "
    )
