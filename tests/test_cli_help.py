"""What a new user meets first, through the real CLI: help with a description for every
command and option and examples for each command, "did you mean" for a mistyped command,
option, choice or pipeline, the ``pipelines`` listing, and a warning for a config in a format
the tool does not read."""

from __future__ import annotations

import argparse
import json

import pytest

from codex_orchestrator.cli import build_parser
from conftest import Repo, assert_usage_error


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(prog, parser, one-line help) of every subcommand, nested ones (tasks check) too."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((sub.prog, sub, helps.get(name) or ""))
                found += _commands(sub)
    return found


def test_every_command_and_option_is_described_with_examples() -> None:
    commands = _commands(build_parser())
    assert len(commands) >= 19
    for prog, parser, summary in commands:
        assert summary, prog
        assert parser.description, prog
        assert (parser.epilog or "").startswith("examples:\n  codex-orchestrator") or (
            "completion" in prog and "examples:" in (parser.epilog or "")
        ), prog
        for action in parser._actions:
            if action.help != argparse.SUPPRESS and not isinstance(
                action, argparse._SubParsersAction
            ):
                assert action.help, (prog, action.dest)


def test_help_speaks_to_users(repo: Repo) -> None:
    top = repo.cli("--help")
    assert top.returncode == 0
    assert top.stdout.splitlines()[2].startswith("Run a repository's engineering pipelines")
    assert "Command-line entry point" not in top.stdout and "examples:" in top.stdout
    start = repo.cli("start", "--help")
    assert "it is only recorded" in " ".join(start.stdout.split())
    assert "examples:\n  codex-orchestrator start " in start.stdout
    assert "@last" in repo.cli("logs", "--help").stdout


def test_did_you_mean_for_commands_options_choices_and_pipelines(repo: Repo) -> None:
    repo.pipeline({"id": "hello", "command": "echo hello"}, pipeline_id="checks")
    assert_usage_error(repo.cli("strat"), "invalid choice: 'strat'; did you mean 'start'?")
    assert_usage_error(repo.cli("start", "--fromat", "json"), "did you mean '--format'?")
    assert_usage_error(repo.cli("tasks", "chek"), "did you mean 'check'?")
    assert_usage_error(repo.cli("runs", "--format", "ndjsn"), "did you mean 'ndjson'?")
    line = assert_usage_error(repo.cli("plan", "chekcs"), "did you mean 'checks'?")
    assert "available: checks, diagnostics" in line
    assert "did you mean" not in assert_usage_error(repo.cli("start", "--zzzzzz"), "--zzzzzz")


@pytest.mark.slow
def test_pipelines_lists_every_pipeline_with_its_stages(repo: Repo) -> None:
    repo.write_config(
        {
            "defaultPipeline": "ci",
            "pipelines": [
                {
                    "id": "ci",
                    "title": "Continuous integration",
                    "stages": [
                        {"id": "lint", "command": "true"},
                        {"id": "test", "command": "true", "needs": ["lint"]},
                    ],
                },
                {"id": "docs", "stages": [{"id": "build-docs", "command": "true"}]},
            ],
        }
    )
    text = repo.cli("pipelines")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[:4] == [
        "ci (default, config): Continuous integration",
        "  stages: lint, test",
        "docs (config)",
        "  stages: build-docs",
    ]
    assert lines[4].startswith("diagnostics (builtin)")
    document = json.loads(repo.cli("pipelines", "--format", "json").stdout)
    assert document["default_pipeline"] == "ci"
    ci, docs, diagnostics = document["pipelines"]
    assert (ci["id"], ci["default"], ci["title"]) == ("ci", True, "Continuous integration")
    assert [stage["id"] for stage in ci["stages"]] == ["lint", "test"]
    assert ci["stages"][1] == {"id": "test", "title": "test", "kind": "command", "needs": ["lint"]}
    assert (docs["default"], diagnostics["source"]) == (False, "builtin")


def test_a_yaml_or_toml_config_gets_a_warning(repo: Repo) -> None:
    (repo.root / "codex.orchestrator.yaml").write_text("pipelines: []\n")
    alone = repo.cli("plan", "--format", "json")
    assert alone.returncode == 0, alone.stderr
    assert (
        "warning: codex.orchestrator.yaml: ignored; only codex.orchestrator.json is read; "
        "convert it to JSON under that name"
    ) in alone.stderr.splitlines()
    repo.pipeline({"id": "hello", "command": "echo hello"})
    (repo.root / "codex.orchestrator.toml").write_text("")
    beside = repo.cli("pipelines")
    warnings = [line for line in beside.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: codex.orchestrator.{ext}: ignored; only codex.orchestrator.json is read; "
        "move its settings there and remove it"
        for ext in ("yaml", "toml")
    ]
