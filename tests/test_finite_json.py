"""JSON output and records never carry non-finite numbers: ``NaN``, ``Infinity`` (or ``1e999``)
in a hand-edited history entry or metrics line are read as absent, and every JSON the tool
writes goes through one encoder that cannot emit them (`jsonio.json_text`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo

NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e999")


def strict_json(text: str) -> Any:
    """Parse ``text`` as standard JSON: ``NaN`` and ``Infinity`` are not JSON."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-JSON constant {constant} in {text[:200]!r}")

    def number(literal: str) -> float:
        value = float(literal)
        assert value not in (float("inf"), float("-inf")), literal
        return value

    return json.loads(text, parse_constant=refuse, parse_float=number)


def _tamper(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new))


@pytest.mark.slow
@pytest.mark.parametrize("constant", NON_FINITE)
def test_json_output_never_carries_non_finite_numbers(repo: Repo, constant: str) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    for _ in range(2):
        assert repo.start_json("--task", "inf")[0] == 0
    state = repo.root / "out" / "inf" / "state.json"
    _tamper(state, '"durationSeconds":', f'"durationSeconds":{constant},"was":')
    metrics = repo.root / ".runs" / "inf" / "metrics.json"
    _tamper(metrics, '"duration_seconds":', f'"duration_seconds":{constant},"was":')

    text = repo.cli("runs")
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    assert text.stdout.count("succeeded") == 2

    rows = strict_json(repo.cli("runs", "--format", "json").stdout)["runs"]
    assert len(rows) == 2 and all(isinstance(row["duration_seconds"], float) for row in rows)
    lines = repo.cli("runs", "--format", "ndjson").stdout.splitlines()
    assert [strict_json(line)["run_id"] for line in lines] == [row["run_id"] for row in rows]

    stats = repo.cli("stats", "--task", "inf", "--write", "--format", "json")
    assert stats.returncode == 0, stats.stderr
    [task] = strict_json(stats.stdout)["tasks"]
    assert task["runs"] == 2 and task["parse_errors"] == 0
    written = repo.root / ".runs" / "inf" / "metrics-summary.json"
    assert strict_json(written.read_text())["entries_total"] == 2
    assert repo.cli("stats", "--task", "inf").returncode == 0


@pytest.mark.slow
def test_records_rewritten_from_a_tampered_history_stay_json(repo: Repo) -> None:
    """A history entry holding Infinity is carried into the next ``state.json`` as null."""
    repo.pipeline({"id": "a", "command": "true"})
    repo.start_json("--task", "again")
    state = repo.root / "out" / "again" / "state.json"
    _tamper(state, '"durationSeconds":', '"durationSeconds":Infinity,"was":')
    repo.start_json("--task", "again")
    entries = strict_json(state.read_text())["runs"]
    assert len(entries) == 2 and entries[0]["durationSeconds"] is None
