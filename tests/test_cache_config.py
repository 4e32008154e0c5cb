"""The stage cache's config keys and settings: bad values are one line and exit 2 (SPEC §16)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.errors import ConfigError
from codex_orchestrator.pipelines.config import load_config
from codex_orchestrator.records.workspace import Settings
from conftest import Repo, assert_usage_error


def _stage(**extra: Any) -> dict[str, Any]:
    return {"id": "test", "command": "true", **extra}


@pytest.mark.parametrize(
    ("cache", "needles"),
    [
        (True, ("pipelines[0].stages[0].cache.inputs", "missing required key")),
        ({"inputs": ["../x"]}, ("cache.inputs[0]", "leads outside the repository root")),
        ({"inputs": ["/etc/passwd"]}, ("cache.inputs[0]",)),
        ({"inputs": "all"}, ("cache.inputs", 'the only string allowed is "git"')),
        ({"inputs": ["src"], "env": ["1X"]}, ("cache.env[0]", "invalid environment variable")),
        ({"inputs": ["src"], "ouputs": []}, ("cache.ouputs", "did you mean 'outputs'")),
        ({"inputs": ["src"], "outputs": ["../o"]}, ("cache.outputs[0]",)),
    ],
)
def test_a_bad_cache_declaration_is_a_config_error_naming_it(
    tmp_path: Path, cache: object, needles: tuple[str, ...]
) -> None:
    assert_config_error(
        tmp_path, {"pipelines": [{"id": "p", "stages": [_stage(cache=cache)]}]}, needles
    )


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"cache": "yes"}, "settings.cache: expected true or false"),
        ({"diagnostics_cache": 1}, "settings.diagnostics_cache: expected true or false"),
        ({"cache_max_bytes": 0}, "settings.cache_max_bytes"),
        ({"cache_max_bytes": 1.5}, "settings.cache_max_bytes"),
        ({"cache_dir": ""}, "settings.cache_dir: must not be empty"),
        ({"cache_dir": 3}, "settings.cache_dir: expected a string"),
    ],
)
def test_a_bad_cache_setting_is_a_config_error_naming_it(
    tmp_path: Path, settings: dict[str, object], needle: str
) -> None:
    assert_config_error(tmp_path, {"settings": settings}, (needle,))


def assert_config_error(root: Path, document: dict[str, Any], needles: tuple[str, ...]) -> None:
    (root / "codex.orchestrator.json").write_text(json.dumps(document))
    with pytest.raises(ConfigError) as raised:
        load_config(root)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("codex.orchestrator.json: ")
    for needle in needles:
        assert needle in message, message


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cache", "needles"),
    [
        ({"inputs": ["../x"]}, ("cache.inputs[0]: '../x' leads outside the repository root",)),
        (
            {"inputs": ["src"], "outputs": ["dist/../../x"]},
            ("cache.outputs[0]: 'dist/../../x' leads outside the repository root",),
        ),
        (
            {"inputs": ["src"], "outputs": ["/tmp/x"]},
            ("cache.outputs[0]: absolute path '/tmp/x' is outside the repository root",),
        ),
    ],
)
def test_a_glob_escaping_the_root_is_one_line_and_exit_2_before_anything_runs(
    repo: Repo, cache: dict[str, object], needles: tuple[str, ...]
) -> None:
    repo.pipeline(_stage(cache=cache))
    result = repo.cli("start")
    assert_usage_error(result, *needles)
    assert not (repo.root / ".runs").exists()


def test_the_declaration_and_settings_are_parsed(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text("build:\n\ttrue\nlint:\n\ttrue\ntest:\n\ttrue\n")
    (tmp_path / "codex.orchestrator.json").write_text(
        '{"settings": {"cache": false, "cache_max_bytes": 4096, "diagnostics_cache": true,'
        ' "cache_dir": "../shared"},'
        ' "pipelines": [{"id": "p", "stages": ['
        '{"id": "a", "command": "true", "cache": {"inputs": ["./src//x"], "env": ["CI"]}},'
        '{"id": "b", "command": "true", "cache": false}, {"id": "c", "command": "true"}]}]}'
    )
    config = load_config(tmp_path)
    stages = config.pipelines["p"].stages
    assert [getattr(stage, "cache", None) for stage in stages] == [
        CacheSpec(inputs=("src/x",), env=("CI",)),
        None,
        None,
    ]
    settings = Settings.resolve(config.settings)
    assert (settings.cache, settings.cache_max_bytes, settings.diagnostics_cache) == (
        False,
        4096,
        True,
    )
    assert config.settings["cache_dir"] == "../shared"
    assert Settings().cache is True and Settings().diagnostics_cache is False
    built_in = {
        stage.id: getattr(stage, "cache", None) for stage in config.pipelines["diagnostics"].stages
    }
    git = CacheSpec(inputs="git")
    assert built_in == {"build": git, "lint": git, "test": git, "spec-guard": None}
    (tmp_path / "codex.orchestrator.json").write_text("{}")
    plain = load_config(tmp_path).pipelines["diagnostics"].stages
    assert [getattr(stage, "cache", None) for stage in plain] == [None] * 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cache", "settings", "needle"),
    [
        ({"inputs": ["src"], "outputs": ["dist/a"]}, {}, "stage test: cache.outputs cannot be"),
        ({"inputs": ["src"], "outputs": []}, {}, "cannot reach the Dask scheduler"),
        ({"inputs": ["src"], "outputs": ["dist/a"]}, {"cache": False}, "cannot reach the Dask"),
    ],
)
def test_outputs_that_a_remote_worker_root_cannot_honour_are_refused_before_connecting(
    repo: Repo, cache: dict[str, object], settings: dict[str, object], needle: str
) -> None:
    settings = {"worker_root": "/elsewhere/repo", **settings}
    repo.pipeline(_stage(cache=cache), settings=settings)
    result = repo.cli("start", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert_usage_error(result, needle)


@pytest.mark.slow
def test_a_worker_root_naming_this_tree_through_a_link_is_this_tree(
    repo: Repo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    link = tmp_path_factory.mktemp("elsewhere") / "repo"
    link.symlink_to(repo.root)
    stage = _stage(cache={"inputs": ["src"], "outputs": ["dist/a"]})
    repo.pipeline(stage, settings={"worker_root": f"{link}/"})
    result = repo.cli("start", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert_usage_error(result, "cannot reach the Dask scheduler")


@pytest.mark.slow
def test_resume_refuses_outputs_a_remote_worker_root_cannot_honour_and_leaves_the_run(
    repo: Repo,
) -> None:
    stage = _stage(command="exit 1", cache={"inputs": ["src"], "outputs": ["dist/a"]})
    repo.pipeline(stage)
    code, document = repo.start_json()
    assert code != 0
    repo.pipeline(stage, settings={"worker_root": "/elsewhere/repo"})
    manifest = repo.root / document["manifest"]
    before = manifest.read_bytes()
    scheduler = ("--executor", "dask", "--scheduler", "tcp://127.0.0.1:9")
    result = repo.cli("resume", document["run_id"], *scheduler)
    assert_usage_error(result, "pipeline main, stage test: cache.outputs cannot be restored")
    assert manifest.read_bytes() == before
