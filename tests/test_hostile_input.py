"""Hostile files and arguments: no hang, no unbounded read, no traceback, one line each.

FIFOs and ``/dev/zero`` in place of the files the tool reads, 1 MB lines for every regex over
user text, JSON nested 100,000 deep, duplicate keys, lone surrogates, bytes that are not UTF-8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codex_orchestrator.evidence.checklist import parse
from codex_orchestrator.evidence.spec_guard import review_value
from conftest import Repo, assert_one_line_error

TASK = "0400-hostile"
MEGABYTE = 1_000_000


def _fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


@pytest.mark.parametrize("command", [("plan",), ("start",), ("tasks", "check")])
def test_a_fifo_config_is_refused_at_once(repo: Repo, command: tuple[str, ...]) -> None:
    _fifo(repo.root / "codex.orchestrator.json")
    result = repo.cli(*command, timeout=20)
    assert_one_line_error(result, 2, "codex.orchestrator.json", "FIFO")


def test_dev_zero_behind_a_link_as_the_config_is_refused(repo: Repo) -> None:
    (repo.root / "codex.orchestrator.json").symlink_to("/dev/zero")
    result = repo.cli("plan", timeout=20)
    assert_one_line_error(result, 2, "codex.orchestrator.json", "device")


def test_an_oversized_config_is_refused(repo: Repo) -> None:
    with open(repo.root / "codex.orchestrator.json", "wb") as handle:
        handle.truncate(9 * 1024 * 1024)
    assert_one_line_error(repo.cli("plan"), 2, "codex.orchestrator.json", "limit")


def test_a_fifo_task_index_is_refused(repo: Repo) -> None:
    _fifo(repo.root / "tasks" / "index.json")
    assert_one_line_error(repo.cli("tasks", "check", timeout=20), 2, "tasks/index.json", "FIFO")


def test_a_fifo_checklist_mirror_is_reported_not_waited_for(repo: Repo) -> None:
    _fifo(repo.root / "tasks" / f"tasks-{TASK}.md")
    (repo.root / ".agent" / "task").mkdir(parents=True)
    (repo.root / ".agent" / "task" / f"{TASK}.md").write_text("- [ ] Item\n")
    result = repo.cli("tasks", "check", TASK, "--format", "json", timeout=20)
    assert result.returncode == 1, result.stderr
    messages = [p["message"] for t in json.loads(result.stdout)["tasks"] for p in t["problems"]]
    assert any("not a regular file" in message for message in messages), messages


def test_a_fifo_spec_is_a_finding_not_a_hang(repo: Repo) -> None:
    _fifo(repo.root / "tasks" / "specs" / "x.md")
    result = repo.cli("spec-guard", "--dry-run", "--format", "json", timeout=20)
    assert result.returncode == 0, result.stderr
    kinds = [finding["kind"] for finding in json.loads(result.stdout)["findings"]]
    assert "spec-unreadable" in kinds


def test_headings_parse_in_linear_time_on_megabyte_lines() -> None:
    lines = [
        "#" + " " * MEGABYTE + "x",
        "# " + "a " * (MEGABYTE // 2) + "#" * 10 + " " * 1000 + "x",
        "## " + " " * MEGABYTE,
        "- [ ] " + " " * MEGABYTE + "item",
        "`" + "x` `" * (MEGABYTE // 4),
    ]
    started = time.monotonic()
    checklist = parse("\n".join(lines).encode())
    assert time.monotonic() - started < 10  # quadratic: hours
    assert [heading.level for heading in checklist.headings] == [1, 1, 2]
    assert checklist.headings[0].text == "x"
    assert checklist.headings[2].text == ""


def test_heading_closing_runs() -> None:
    texts = [h.text for h in parse(b"# a ##\n# a#\n### ###\n#\n####### no\n#x\n").headings]
    assert texts == ["a", "a#", "", ""]


def test_last_review_scans_in_linear_time_on_megabyte_lines() -> None:
    text = "\n".join(
        [
            "last_review:" + " " * MEGABYTE + "x",
            " " * MEGABYTE + "last_review" + " " * MEGABYTE,
            "- **last_review**: 2025-01-02",
        ]
    )
    started = time.monotonic()
    assert review_value(text) == "x"
    assert review_value(text.split("\n", 1)[1]) == "2025-01-02"
    assert time.monotonic() - started < 10


def test_review_value_shapes() -> None:
    assert review_value("intro\nlast_review: '2025-01-01'  \n") == "'2025-01-01'"
    assert review_value("last_reviewed: 2025-01-01\n") is None
    assert review_value("see last_review: 2025-01-01\n") is None
    assert review_value("> last_review:: 2025-01-01") == "2025-01-01"


def test_deeply_nested_config_is_one_line(repo: Repo) -> None:
    (repo.root / "codex.orchestrator.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_one_line_error(repo.cli("plan"), 2, "codex.orchestrator.json", "nested too deeply")


def test_duplicate_keys_are_refused_with_their_path(repo: Repo) -> None:
    (repo.root / "codex.orchestrator.json").write_text(
        '{"pipelines": [{"id": "p", "stages": [{"id": "a", "command": "true", '
        '"env": {"K": "1", "K": "2"}}]}]}'
    )
    assert_one_line_error(repo.cli("plan"), 2, "pipelines[0].stages[0].env.K", "twice")


@pytest.mark.parametrize("key", ["command", "title", "summaryHint"])
def test_lone_surrogates_are_refused_with_their_path(repo: Repo, key: str) -> None:
    stage = {"id": "a", "command": "true", key: "bad \\udc80 text"}
    text = json.dumps({"pipelines": [{"id": "p", "stages": [stage]}]})
    (repo.root / "codex.orchestrator.json").write_text(text.replace("\\\\udc80", "\\udc80"))
    result = repo.cli("start", "p")
    assert_one_line_error(result, 2, f"pipelines[0].stages[0].{key}", "surrogate")
    assert not (repo.root / ".runs").exists()


@pytest.mark.parametrize(
    "arguments",
    [
        ("start", "--approval-policy", b"\xff"),
        ("resume", "2025-01-01T00-00-00-000Z-00000000", "--actor", b"\xfe"),
        ("resume", "2025-01-01T00-00-00-000Z-00000000", "--reason", b"x\xff"),
        ("tasks", "new", TASK, "--title", b"\xc3("),
    ],
)
def test_arguments_that_are_not_utf8_are_refused(
    repo: Repo, arguments: tuple[str | bytes, ...]
) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    argv = [os.fsencode(part) if isinstance(part, str) else part for part in arguments]
    result = subprocess.run(
        [sys.executable.encode(), b"-m", b"codex_orchestrator", *argv],
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        check=False,
        timeout=60,
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert "not valid UTF-8" in stderr
    assert not (repo.root / ".runs").exists()


def _bytes_env(repo: Repo, **extra: bytes) -> dict[bytes, bytes]:
    env = {os.fsencode(key): os.fsencode(value) for key, value in repo.env.items()}
    env.update({key.encode(): value for key, value in extra.items()})
    return env


@pytest.mark.slow
def test_text_from_the_environment_is_recorded_as_valid_utf8(repo: Repo) -> None:
    """A ``$USER`` that is not UTF-8 is recorded with U+FFFD by ``resume`` and ``cancel``, so
    the run's records stay text and its report renders."""
    repo.pipeline({"id": "a", "command": "test -e marker || { touch marker; exit 1; }"})
    code, document = repo.start_json()
    assert code == 1
    env = _bytes_env(repo, USER=b"bad\xffname")
    command = [sys.executable, "-m", "codex_orchestrator"]
    resumed = subprocess.run(
        [*command, "resume", document["run_id"]], cwd=repo.root, env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr
    repo.pipeline({"id": "a", "command": "sleep 30"})
    code, live = repo.start_json("--detach")
    assert code == 0
    cancelled = subprocess.run(
        [*command, "cancel", live["run_id"], "--wait"], cwd=repo.root, env=env, capture_output=True
    )
    assert cancelled.returncode == 0, cancelled.stderr
    for run, events in ((document, "resume_events"), (live, "cancel_events")):
        raw = (repo.root / run["manifest"]).read_bytes()
        assert b"\\udc" not in raw  # no surrogate escape in the record
        assert json.loads(raw)[events][-1]["actor"] == "bad\ufffdname"
        result = repo.cli("report", run["run_id"])
        assert result.returncode == 0, result.stderr
        assert "bad\ufffdname" in (repo.root / run["artifact_root"] / "report.html").read_text()


@pytest.mark.slow
def test_text_from_the_environment_in_old_records_still_renders(repo: Repo) -> None:
    """Records written before the fix hold ``\\udcXX`` escapes: renderers replace them."""
    repo.pipeline({"id": "a", "command": "true"})
    code, document = repo.start_json()
    assert code == 0
    path = repo.root / document["manifest"]
    manifest = json.loads(path.read_text())
    manifest["resume_events"] = [{"actor": "old\udcffname", "outcome": "resumed"}]
    manifest["cancel_events"] = [{"actor": "old\udcfe", "reason": "x\ud800"}]
    path.write_bytes(json.dumps(manifest).encode())  # ASCII-escaped, as JSON allows
    result = repo.cli("report", document["run_id"])
    assert result.returncode == 0, result.stderr
    page = (repo.root / document["artifact_root"] / "report.html").read_bytes().decode("utf-8")
    assert "old\ufffdname" in page and "x\ufffd" in page
    assert repo.cli("status", document["run_id"]).returncode == 0
