"""Every numeric argument and numeric environment variable is parsed by one helper with bounds:
bad input is one line and exit 2, never an internal error (`codex_orchestrator.util.numeric`)."""

from __future__ import annotations

import json

import pytest

from conftest import Repo, assert_usage_error

#: Text that ``str.isdigit``, ``int`` or ``float`` accept but that is no number a person typed.
NOT_NUMBERS = ["²", "³", "١٢", "1_0", "nan", "inf", "-1", "1.5x", "", " "]
TOO_BIG = "99999999999999999999"


@pytest.fixture
def ran(repo: Repo) -> str:
    repo.pipeline({"id": "a", "command": "echo one; echo two"})
    code, document = repo.start_json("--task", "numbers")
    assert code == 0
    return str(document["run_id"])


def _options(run_id: str) -> list[tuple[str, ...]]:
    """Each numeric option of each command, ready for a value."""
    return [
        ("runs", "--limit"),
        ("logs", run_id, "--tail"),
        ("prune", "--keep"),
        ("status", run_id, "--watch", "--interval"),
        ("start", "--max-parallel"),
    ]


@pytest.mark.slow
def test_every_numeric_argument_is_parsed_with_bounds(repo: Repo, ran: str) -> None:
    before = sorted(path.name for path in (repo.root / ".runs" / "numbers" / "cli").iterdir())
    for value in [*NOT_NUMBERS, TOO_BIG]:
        assert_usage_error(repo.cli("runs", "--limit", value), "--limit")
    for command in _options(ran):
        option = command[-1]
        for value in ("²", TOO_BIG, "nan"):
            assert_usage_error(repo.cli(*command, value), option)
        if command[0] != "runs":  # runs has its own --format choices (ndjson too)
            as_json = repo.cli(*command, "³", "--format", "json")
            assert json.loads(as_json.stdout)["exit_code"] == 2, command
    after = sorted(path.name for path in (repo.root / ".runs" / "numbers" / "cli").iterdir())
    assert after == before  # nothing was started or pruned on bad input


@pytest.mark.slow
def test_numeric_arguments_in_range_still_work(repo: Repo, ran: str) -> None:
    listed = json.loads(repo.cli("runs", "--limit", "1", "--format", "json").stdout)
    assert [row["run_id"] for row in listed["runs"]] == [ran]
    assert repo.cli("runs", "--limit", "1000000000").returncode == 0
    tail = repo.cli("logs", ran, "--tail", "1")
    assert tail.returncode == 0 and tail.stdout == "two\n"
    assert repo.cli("prune", "--keep", "5", "--dry-run").returncode == 0


@pytest.mark.parametrize(
    "name",
    [
        "CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS",
        "CODEX_ORCHESTRATOR_MANIFEST_THROTTLE_SECONDS",
        "CODEX_ORCHESTRATOR_MAX_PARALLEL",
    ],
)
@pytest.mark.slow
@pytest.mark.parametrize("value", ["²", "1_0", "inf", TOO_BIG])
def test_every_numeric_environment_variable_is_parsed_with_bounds(
    repo: Repo, name: str, value: str
) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    assert_usage_error(repo.cli("start", env={name: value}), name)


@pytest.mark.parametrize("columns", ["²", TOO_BIG, "nan", "5"])
def test_help_with_an_odd_columns_variable(repo: Repo, columns: str) -> None:
    result = repo.cli("runs", "--help", env={"COLUMNS": columns})
    assert result.returncode == 0 and "--limit" in result.stdout, result.stderr
