"""The JSON Schema of ``codex.orchestrator.json`` (shipped as package data) agrees with the
config validator: every config the validator accepts is valid, and configs it refuses for
their shape (unknown key, wrong type, number out of range) are invalid.

The schema cannot see cross-references (``needs`` naming a stage, ``defaultPipeline`` naming
a pipeline, ``cwd`` resolving inside the root), so agreement is checked both ways only for
shape errors; "the validator accepts" always implies "the schema accepts" (property test).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from codex_orchestrator.errors import ConfigError
from codex_orchestrator.pipelines.config import (
    CONFIG_FILE,
    EXECUTOR_SETTINGS,
    IGNORED_KEYS,
    PATH_SETTINGS,
    PIPELINE_KEYS,
    STAGE_KEYS,
    TOP_LEVEL_KEYS,
    load_config,
)
from codex_orchestrator.records.workspace import SETTING_NAMES
from conftest import Repo, assert_usage_error

REPO = Path(__file__).resolve().parents[1]
SCHEMA_NAME = "codex.orchestrator.schema.json"


@cache
def schema() -> dict[str, Any]:
    text = (resources.files("codex_orchestrator") / "schema" / SCHEMA_NAME).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def schema_errors(document: Any) -> list[str]:
    return [error.message for error in validator().iter_errors(document)]


def validator_accepts(root: Path, document: Any) -> bool:
    (root / CONFIG_FILE).write_text(json.dumps(document), encoding="utf-8")
    try:
        load_config(root)
    except ConfigError:
        return False
    return True


def with_stage(stage: dict[str, Any], **pipeline: Any) -> dict[str, Any]:
    return {"pipelines": [{"id": "p", "stages": [stage], **pipeline}]}


def cmd(**extra: Any) -> dict[str, Any]:
    return {"id": "s", "command": "true", **extra}


# --- the schema itself ---------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema_with_a_description_on_every_property() -> None:
    Draft202012Validator.check_schema(schema())
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                assert isinstance(sub.get("description"), str) and sub["description"], (
                    f"{where}.properties.{name} has no description"
                )
            for key, sub in node.items():
                if key not in ("if", "not"):  # conditions, not definitions
                    walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for index, sub in enumerate(node):
                walk(sub, f"{where}[{index}]")

    walk(schema(), "schema")


def _properties(definition: str | None) -> set[str]:
    node = schema() if definition is None else schema()["$defs"][definition]
    return set(node["properties"])


def test_schema_names_exactly_the_keys_the_validator_knows() -> None:
    """A key added to (or dropped from) config.py without the schema fails here."""
    assert _properties(None) == set(TOP_LEVEL_KEYS | IGNORED_KEYS)
    assert _properties("pipeline") == set(PIPELINE_KEYS | IGNORED_KEYS)
    stage_keys = frozenset().union(*STAGE_KEYS.values())
    for kind, definition in (
        ("command", "commandStage"),
        ("subpipeline", "subpipelineStage"),
        ("stage-set", "stageSetEntry"),
    ):
        expected = STAGE_KEYS[kind] | (IGNORED_KEYS - stage_keys)
        assert _properties(definition) == set(expected), kind
    assert _properties("settings") == set(SETTING_NAMES) | EXECUTOR_SETTINGS | PATH_SETTINGS


def test_ignored_typescript_keys_are_marked_deprecated_where_they_are_ignored() -> None:
    for definition, real_keys in (
        (None, TOP_LEVEL_KEYS),
        ("pipeline", PIPELINE_KEYS),
        ("commandStage", STAGE_KEYS["command"]),
        ("subpipelineStage", STAGE_KEYS["subpipeline"]),
        ("stageSetEntry", STAGE_KEYS["stage-set"]),
    ):
        node = schema() if definition is None else schema()["$defs"][definition]
        for key, sub in node["properties"].items():
            ignored = key in IGNORED_KEYS and key not in real_keys
            assert sub.get("deprecated", False) is ignored, (definition, key)


# --- the repository's own configs and the documented examples -------------------------------


def _documented_configs() -> list[tuple[str, Any]]:
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for number, block in enumerate(re.findall(r"```json\n(.*?)```", text, re.S), start=1):
            document = json.loads(block)
            if isinstance(document, dict) and {"pipelines", "settings"} & set(document):
                found.append((f"{path.name} json block {number}", document))
    return found


def test_the_repository_config_validates_and_points_at_the_schema() -> None:
    document = json.loads((REPO / CONFIG_FILE).read_text(encoding="utf-8"))
    assert schema_errors(document) == []
    assert (REPO / document["$schema"]).resolve() == (
        REPO / "src" / "codex_orchestrator" / "schema" / SCHEMA_NAME
    )
    load_config(REPO)


def test_every_config_example_in_the_readme_and_docs_validates() -> None:
    examples = _documented_configs()
    names = {name.split(" ")[0] for name, _ in examples}
    assert {"README.md", "graphs.md", "diagnostics.md", "configuration.md"} <= names
    for name, document in examples:
        assert schema_errors(document) == [], name


# --- agreement with the validator -----------------------------------------------------------

ACCEPTED: dict[str, dict[str, Any]] = {
    "empty": {},
    "schema key": {"$schema": "https://example.com/s.json"},
    "every command key": with_stage(
        {
            "kind": "command",
            "id": "build-1",
            "title": "Build",
            "command": "make",
            "cwd": "sub/dir",
            "env": {"K": "V", "EMPTY": ""},
            "allowFailure": True,
            "summaryHint": "",
            "timeoutSeconds": 604800,
            "resources": {"GPU": 1, "mem": 0.5},
            "needs": [],
            "retries": 10,
            "retryDelaySeconds": 0,
        },
        title="P",
        description="",
        tags=["a"],
        metadata={"x": [1]},
        guardrailsRequired=False,
        maxParallel=1024,
        failFast=True,
    ),
    "timeoutMs": with_stage(cmd(timeoutMs=0.5)),
    "whole float retries": with_stage(cmd(retries=2.0)),
    "sub-pipeline and stage set": {
        "defaultPipeline": "main",
        "stageSets": {"common": [cmd(), {"kind": "subpipeline", "id": "c", "pipeline": "x"}]},
        "pipelines": [
            {"id": "x", "stages": [cmd()]},
            {
                "id": "main",
                "stages": [
                    {"kind": "stage-set", "ref": "common"},
                    {
                        "kind": "subpipeline",
                        "id": "child",
                        "title": "Child",
                        "pipeline": "x",
                        "optional": True,
                        "needs": ["c"],
                    },
                ],
            },
        ],
    },
    "ignored TypeScript keys": {
        "runtimeMode": "cloud",
        "description": "top",
        "pipelines": [
            {
                "id": "p",
                "retries": 3,
                "session": {},
                "stages": [
                    cmd(description="d", metadata={}, inputs=["x"], outputs=None),
                    {"kind": "stage-set", "ref": "s", "telemetry": True},
                ],
            }
        ],
        "stageSets": {"s": [{"kind": "subpipeline", "id": "k", "pipeline": "q", "model": 1}]},
    },
    "every setting": {
        "settings": {
            "heartbeat_interval_seconds": 0.05,
            "heartbeat_stale_after_seconds": 604800,
            "manifest_throttle_seconds": 86400,
            "lock_attempts": 100,
            "lock_initial_delay_ms": 60000,
            "lock_backoff_factor": 10,
            "lock_max_delay_ms": 0.001,
            "kill_grace_seconds": 3600,
            "max_parallel": 1,
            "report": True,
            "executor": "dask",
            "dask_scheduler": "tcp://127.0.0.1:8786",
            "worker_root": "/srv/repo",
        }
    },
    "tasks": {"tasks": {"mirrors": ["tasks/{task}.md", "docs/TASKS.md"], "other": 1}},
}
# The ``q`` pipeline of "ignored TypeScript keys" must exist for the validator.
ACCEPTED["ignored TypeScript keys"]["pipelines"].append({"id": "q", "stages": [cmd()]})

REFUSED: dict[str, Any] = {
    "not an object": [],
    "unknown top-level key": {"pipeline": []},
    "unknown pipeline key": {"pipelines": [{"id": "p", "stages": [cmd()], "stage": []}]},
    "misspelt stage key": with_stage(cmd(comand="true")),
    "misspelt sub-pipeline key": with_stage(
        {"kind": "subpipeline", "id": "s", "pipeline": "p", "optinal": True}
    ),
    "unknown stage-set entry key": with_stage({"kind": "stage-set", "ref": "x", "id": "s"}),
    "stage key of another kind": with_stage(cmd(pipeline="x")),
    "retries on a sub-pipeline stage": with_stage(
        {"kind": "subpipeline", "id": "s", "pipeline": "p", "retries": 1}
    ),
    "unknown kind": with_stage(cmd(kind="script")),
    "stage set inside a stage set": {
        "stageSets": {"s": [{"kind": "stage-set", "ref": "s"}]},
    },
    "missing command": with_stage({"id": "s"}),
    "missing stages": {"pipelines": [{"id": "p"}]},
    "no stages": {"pipelines": [{"id": "p", "stages": []}]},
    "invalid id": with_stage(cmd(id="a b")),
    "id too long": with_stage(cmd(id="a" * 129)),
    "blank command": with_stage(cmd(command="  ")),
    "NUL in command": with_stage(cmd(command="a\u0000b")),
    "absolute cwd": with_stage(cmd(cwd="/tmp")),
    "env value not a string": with_stage(cmd(env={"K": 1})),
    "env name with =": with_stage(cmd(env={"A=B": "x"})),
    "allowFailure a string": with_stage(cmd(allowFailure="yes")),
    "timeout zero": with_stage(cmd(timeoutSeconds=0)),
    "timeout over a week": with_stage(cmd(timeoutSeconds=604801)),
    "timeout a boolean": with_stage(cmd(timeoutSeconds=True)),
    "both timeouts": with_stage(cmd(timeoutSeconds=1, timeoutMs=1000)),
    "retries 11": with_stage(cmd(retries=11)),
    "retries fractional": with_stage(cmd(retries=1.5)),
    "retry delay 61": with_stage(cmd(retryDelaySeconds=61)),
    "negative resource": with_stage(cmd(resources={"GPU": -1})),
    "needs a string": with_stage(cmd(needs="build")),
    "needs twice": {
        "pipelines": [{"id": "p", "stages": [cmd(id="a"), cmd(id="b", needs=["a", "a"])]}]
    },
    "maxParallel 0": with_stage(cmd(), maxParallel=0),
    "maxParallel 1025": with_stage(cmd(), maxParallel=1025),
    "failFast a number": with_stage(cmd(), failFast=1),
    "tags not strings": with_stage(cmd(), tags=[1]),
    "unknown setting": {"settings": {"heartbeat": 5}},
    "setting a string": {"settings": {"kill_grace_seconds": "5"}},
    "setting a boolean": {"settings": {"lock_attempts": True}},
    "setting zero": {"settings": {"lock_backoff_factor": 0}},
    "setting over its bound": {"settings": {"heartbeat_interval_seconds": 3601}},
    "heartbeat below its minimum": {"settings": {"heartbeat_interval_seconds": 0.01}},
    "fractional lock attempts": {"settings": {"lock_attempts": 2.5}},
    "lock attempts 101": {"settings": {"lock_attempts": 101}},
    "max_parallel 1025": {"settings": {"max_parallel": 1025}},
    "report not a boolean": {"settings": {"report": 1}},
    "empty scheduler": {"settings": {"dask_scheduler": " "}},
    "no mirrors": {"tasks": {"mirrors": []}},
    "mirror outside": {"tasks": {"mirrors": ["../x/{task}.md"]}},
    "absolute mirror": {"tasks": {"mirrors": ["/x/{task}.md"]}},
    "mirror with two placeholders": {"tasks": {"mirrors": ["{task}/{task}.md"]}},
    "defaultPipeline not an id": {"defaultPipeline": "a/b"},
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_configs_the_validator_accepts_are_valid(name: str, tmp_path: Path) -> None:
    document = ACCEPTED[name]
    assert validator_accepts(tmp_path, document), name
    assert schema_errors(document) == [], name


@pytest.mark.parametrize("name", list(REFUSED))
def test_configs_the_validator_refuses_for_their_shape_are_invalid(
    name: str, tmp_path: Path
) -> None:
    document = REFUSED[name]
    assert not validator_accepts(tmp_path, document), name
    assert schema_errors(document), name


@pytest.mark.parametrize(
    ("settings_", "needle"),
    [
        ({"executor": "kubernetes"}, "unknown executor"),
        (
            {"executor": "dask", "dask_scheduler": "tcp://127.0.0.1:9", "worker_root": "repo"},
            "not an absolute path",
        ),
    ],
)
def test_settings_that_start_refuses_are_invalid_too(
    repo: Repo, settings_: dict[str, str], needle: str
) -> None:
    """The loader leaves these to ``start``; the schema flags them in the editor already."""
    repo.pipeline(cmd(), settings=settings_)
    assert_usage_error(repo.cli("start"), needle)
    assert schema_errors({"settings": settings_})


def test_the_stage_cache_keys_are_described_and_accepted(tmp_path: Path) -> None:
    """SPEC §16: the schema and the validator agree on the stage cache's keys and settings."""
    stage = cmd(cache={"inputs": "git", "outputs": ["dist/**"], "env": ["CI"]})
    assert schema_errors(with_stage(stage)) == []
    assert validator_accepts(tmp_path, with_stage(stage))
    for refused in ({"outputs": []}, {"inputs": []}):  # inputs is required, and not empty
        assert schema_errors(with_stage(cmd(cache=refused)))
        assert not validator_accepts(tmp_path, with_stage(cmd(cache=refused)))
    for setting, value in (
        ("cache", False),
        ("cache_dir", "../shared-cache"),
        ("cache_max_bytes", 1 << 30),
        ("diagnostics_cache", True),
    ):
        assert schema_errors({"settings": {setting: value}}) == [], setting
        assert validator_accepts(tmp_path, {"settings": {setting: value}}), setting
    for setting, value in (("cache", 1), ("cache_max_bytes", 0), ("cache_dir", "")):
        assert schema_errors({"settings": {setting: value}}), setting
        assert not validator_accepts(tmp_path, {"settings": {setting: value}}), setting


# --- property: the schema and the validator agree ------------------------------------------
# Each key draws from values on both sides of the validator's rules (types, bounds, blanks,
# NUL), so that about half the generated configs are accepted and the rest probe the edges.

_ANY = [None, True, 0, 1.5, "", "x", [], {}, ["x"], {"k": 1}]
_TEXT = ["T", "make -j2", "", " ", "a\u0000b", 1, None]
_BOOL = [True, False, 0, "true"]
_NEEDS = [[], ["s0"], ["s0", "s0"], "s0", [1]]
_COMMAND_VALUES: dict[str, list[Any]] = {
    "kind": ["command", "Command", 1],
    "title": _TEXT,
    "cwd": ["sub", "sub/dir", ".", "a/../b", "/abs", "", 1],
    "env": [{}, {"K": "v", "E": ""}, {"A=B": "v"}, {"": "v"}, {"K": 1}, []],
    "allowFailure": _BOOL,
    "summaryHint": ["", "fixed", "a\u0000", 2],
    "timeoutSeconds": [0, 1e-3, 1, 604800, 604801, -1, True, "1"],
    "timeoutMs": [0, 1, 604800000, 604800001, False],
    "resources": [
        {"GPU": 1, "m": 0.5},
        {"GPU": 1e6},
        {"GPU": 1e7},
        {"GPU": 0},
        {" ": 1},
        {"G": "1"},
    ],
    "needs": _NEEDS,
    "retries": [0, 10, 11, 2.0, 2.5, -1, True],
    "retryDelaySeconds": [0, 60, 60.5, -0.1, 0.25, "1"],
    "description": _ANY,
    "metadata": _ANY,
}
_SUBPIPELINE_VALUES: dict[str, list[Any]] = {
    "title": _TEXT,
    "optional": _BOOL,
    "needs": _NEEDS,
    "model": _ANY,
    "retries": [1],
}
_SETTING_VALUES: dict[str, list[Any]] = {
    "heartbeat_interval_seconds": [0.05, 0.049, 3600, 3601, "5"],
    "heartbeat_stale_after_seconds": [1, 604800, 604801, 0],
    "manifest_throttle_seconds": [1, 86400, 86401, -1],
    "lock_attempts": [1, 100, 101, 0, 2.0, 2.5, True],
    "lock_initial_delay_ms": [1, 60000, 60001],
    "lock_backoff_factor": [0.5, 10, 10.5, 0],
    "lock_max_delay_ms": [0.5, 60000, 60000.5],
    "kill_grace_seconds": [1, 3600, 3600.5, None],
    "max_parallel": [1, 1024, 1025, 0, 3.0],
    "report": _BOOL,
    # Not ``executor`` or ``worker_root``: ``start`` checks their values, not the loader
    # (see test_settings_that_start_refuses_are_invalid_too).
    "dask_scheduler": ["tcp://h:1", " ", 5],
}
_PIPELINE_VALUES: dict[str, list[Any]] = {
    "title": _TEXT,
    "description": ["", "d", 1],
    "tags": [[], ["a"], [1], "a"],
    "metadata": [{}, {"k": [1]}, []],
    "guardrailsRequired": _BOOL,
    "maxParallel": [1, 1024, 1025, 0, 2.0, 2.5],
    "failFast": _BOOL,
    "runtimeMode": _ANY,
}


def _document(
    stages: list[dict[str, Any]],
    pipeline: dict[str, Any] | None = None,
    settings_: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "settings": settings_ or {},
        "pipelines": [
            {"id": "p", **(pipeline or {}), "stages": stages},
            {"id": "q", "stages": [{"id": "only", "command": "true"}]},
        ],
    }


def _command(index: int = 0, **extra: Any) -> dict[str, Any]:
    return {"id": f"s{index}", "command": "true", **extra}


def _subpipeline(index: int = 0, **extra: Any) -> dict[str, Any]:
    return {"kind": "subpipeline", "id": f"s{index}", "pipeline": "q", **extra}


def _needs_itself(document: dict[str, Any]) -> bool:
    """A cross-reference error the schema cannot see: stage ``s0`` naming itself in needs."""
    first = document["pipelines"][0]["stages"][0]
    return isinstance(first.get("needs"), list) and "s0" in first["needs"]


@pytest.fixture(scope="module")
def config_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory (holding ``sub/dir``) for every document these tests load: the loader
    writes nothing there, and a directory made and removed per document was most of their
    time (a thousand of each, waiting on the disk)."""
    root = tmp_path_factory.mktemp("config-root")
    (root / "sub" / "dir").mkdir(parents=True)
    return root


def _assert_agree(root: Path, document: dict[str, Any]) -> bool:
    """The validator (loading from ``root``) and the schema agree on ``document``; whether it
    was accepted."""
    accepted = validator_accepts(root, document)
    valid = schema_errors(document) == []
    if accepted:
        assert valid, document
    elif not _needs_itself(document):
        assert not valid, document
    return accepted


def _one_key_documents() -> list[dict[str, Any]]:
    documents = []
    for key, values in _COMMAND_VALUES.items():
        documents += [_document([_command(**{key: value})]) for value in values]
    for key, values in _SUBPIPELINE_VALUES.items():
        documents += [_document([_subpipeline(**{key: value})]) for value in values]
    for key, values in _PIPELINE_VALUES.items():
        documents += [_document([_command()], pipeline={key: value}) for value in values]
    for key, values in _SETTING_VALUES.items():
        documents += [_document([_command()], settings_={key: value}) for value in values]
    return documents


@pytest.mark.slow
def test_the_schema_and_the_validator_agree_on_every_value_of_every_key(config_root: Path) -> None:
    """Each key alone, with values on both sides of every rule (type, bound, blank, NUL)."""
    outcomes = [_assert_agree(config_root, document) for document in _one_key_documents()]
    assert 0.3 < sum(outcomes) / len(outcomes) < 0.8, sum(outcomes)


class _Pool:
    """Strategies for a few keys of one pool and a value for each, built once: building them
    in every draw was half the time of the test below."""

    def __init__(self, values: dict[str, list[Any]], at_most: int) -> None:
        self.keys = st.sets(st.sampled_from(sorted(values)), max_size=at_most)
        self.values = {key: st.sampled_from(choices) for key, choices in values.items()}

    def draw(self, draw: st.DrawFn) -> dict[str, Any]:
        return {key: draw(self.values[key]) for key in sorted(draw(self.keys))}


_POOLS = {
    "command": _Pool(_COMMAND_VALUES, 3),
    "subpipeline": _Pool(_SUBPIPELINE_VALUES, 3),
    "pipeline": _Pool(_PIPELINE_VALUES, 2),
    "setting": _Pool(_SETTING_VALUES, 2),
}


@st.composite
def _config(draw: st.DrawFn) -> dict[str, Any]:
    """A config mixing the values above, several keys at once."""
    stages = []
    for index in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 4)) == 0:
            stages.append(_subpipeline(index, **_POOLS["subpipeline"].draw(draw)))
        else:
            stages.append(_command(index, **_POOLS["command"].draw(draw)))
    return _document(stages, _POOLS["pipeline"].draw(draw), _POOLS["setting"].draw(draw))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_config())
def test_the_schema_and_the_validator_agree_on_mixed_configs(
    config_root: Path, document: dict[str, Any]
) -> None:
    _assert_agree(config_root, document)
