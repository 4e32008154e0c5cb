"""``tasks new``: scaffold index entry, mirrors and stubs; never overwrite an existing file."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from .helpers import assert_usage_error, cli, cli_json, write, write_index

TASK = "0300-new-thing"
MIRRORS = [f"tasks/tasks-{TASK}.md", f".agent/task/{TASK}.md", "docs/TASKS.md"]
STUBS = [
    f"docs/PRD-{TASK}.md",
    f"docs/TECH_SPEC-{TASK}.md",
    f"docs/ACTION_PLAN-{TASK}.md",
    f"tasks/specs/{TASK}.md",
]


@pytest.mark.slow
def test_new_scaffolds_everything_and_checks_clean(tmp_path: Path) -> None:
    code, document = cli_json(tmp_path, "tasks", "new", TASK, "--title", 'New "thing": yes')
    assert code == 0
    assert document["created"] == [*MIRRORS, *STUBS, "tasks/index.json"]
    assert document["kept"] == [] and document["updated"] == []
    (entry,) = json.loads((tmp_path / "tasks/index.json").read_text())["items"]
    assert entry["id"] == "0300" and entry["slug"] == "new-thing" and entry["task_key"] == TASK
    assert entry["title"] == 'New "thing": yes' and entry["path"] == MIRRORS[0]
    assert entry["paths"] == {
        "task": MIRRORS[0],
        "agent_task": MIRRORS[1],
        "prd": STUBS[0],
        "tech_spec": STUBS[1],
        "action_plan": STUBS[2],
        "spec": STUBS[3],
    }
    checklist = (tmp_path / MIRRORS[0]).read_text()
    for item in ("Synchronize collateral", "Run diagnostics", "Guardrails", "Reviewer hand-off"):
        assert f"- [ ] {item}" in checklist
    assert f"last_review: {date.today().isoformat()}" in (tmp_path / STUBS[3]).read_text()
    result = cli(tmp_path, "tasks", "check")
    assert result.returncode == 0, result.stdout
    assert cli(tmp_path, "tasks", "mark", "0300", "guard", "--run", "x").returncode == 2


def test_new_keeps_existing_files_and_appends_a_section_to_a_shared_mirror(tmp_path: Path) -> None:
    write_index(tmp_path, {"id": "0001", "slug": "old", "title": "Old", "status": "done", "x": 1})
    prd = write(tmp_path, STUBS[0], b"my own PRD for 0300\r\n")
    tasks_md = write(tmp_path, "docs/TASKS.md", b"# Tasks\r\n\r\n## 0001-old\r\n- [x] Done")
    code, document = cli_json(tmp_path, "tasks", "new", TASK, "--title", "New")
    assert code == 0
    assert document["kept"] == [STUBS[0]]
    assert document["updated"] == ["docs/TASKS.md", "tasks/index.json"]
    assert prd.read_bytes() == b"my own PRD for 0300\r\n"
    shared = tasks_md.read_bytes()
    assert shared.startswith(b"# Tasks\r\n\r\n## 0001-old\r\n- [x] Done\r\n\r\n## 0300-new-thing")
    assert b"\n" not in shared.replace(b"\r\n", b"")
    items = json.loads((tmp_path / "tasks/index.json").read_text())["items"]
    assert [item.get("task_key", item["id"]) for item in items] == ["0001", TASK]
    assert items[0]["x"] == 1
    assert cli(tmp_path, "tasks", "check", TASK).returncode == 0


@pytest.mark.slow
def test_new_refuses_a_task_of_the_index_and_changes_nothing(tmp_path: Path) -> None:
    write_index(tmp_path, {"id": "0300", "slug": "other", "title": "Other", "status": "open"})
    before = (tmp_path / "tasks/index.json").read_bytes()
    for task in (TASK, "0300-other", "0300"):
        assert_usage_error(
            cli(tmp_path, "tasks", "new", task, "--title", "T"), "already task 0300-other"
        )
    assert (tmp_path / "tasks/index.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["index.json"]


@pytest.mark.slow
def test_new_bad_input(tmp_path: Path) -> None:
    assert_usage_error(cli(tmp_path, "tasks", "new", "a/b", "--title", "T"), "invalid task id")
    assert_usage_error(cli(tmp_path, "tasks", "new", TASK, "--title", "  "), "--title")
    assert_usage_error(cli(tmp_path, "tasks", "new", TASK, "--title", "two\nlines"), "one-line")
    write(tmp_path, "tasks/index.json", "{oops")
    assert_usage_error(cli(tmp_path, "tasks", "new", TASK, "--title", "T"), "tasks/index.json")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["index.json"]


def test_new_task_without_a_number(tmp_path: Path) -> None:
    code, _ = cli_json(tmp_path, "tasks", "new", "polish", "--title", "Polish")
    assert code == 0
    (entry,) = json.loads((tmp_path / "tasks/index.json").read_text())["items"]
    assert (entry["id"], entry["slug"], entry["task_key"]) == ("polish", "polish", "polish")
    assert cli(tmp_path, "tasks", "check", "polish").returncode == 0
