"""``tasks check``: evidence, mirrors and collateral problems, through the real CLI."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from codex_orchestrator.evidence.taskindex import task_slug

from .helpers import (
    SEED_CHECKLIST,
    SEED_RUN,
    TASK,
    assert_usage_error,
    cli,
    cli_json,
    write,
    write_index,
    write_manifest,
)

RUN_A = "2025-11-01T00-00-00-000Z-aaaaaaaa"
RUN_B = "2025-11-01T00-00-00-000Z-bbbbbbbb"
CHECKLIST = "tasks/tasks-{task}.md"
AGENT = ".agent/task/{task}.md"


def _problems(root: Path, *args: str) -> tuple[int, list[dict[str, object]]]:
    code, document = cli_json(root, "tasks", "check", *args)
    problems = [problem for task in document["tasks"] for problem in task["problems"]]
    assert document["problem_count"] == len(problems)
    return code, problems


def _kinds(problems: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(p["kind"], p["file"], p["line"]) for p in problems]


def _mirrors(root: Path, task: str, body: str, tasks_md: str | None = None) -> None:
    write(root, CHECKLIST.format(task=task), f"# {task}\n\n{body}")
    write(root, AGENT.format(task=task), f"# {task}\n\n{body}")
    write(
        root,
        "docs/TASKS.md",
        tasks_md if tasks_md is not None else f"# Tasks\n\n## {task}\n\n{body}",
    )


def test_seed_checklist_gets_a_precise_report(tmp_path: Path) -> None:
    write(tmp_path, f"tasks/tasks-{TASK}.md", SEED_CHECKLIST)
    code, problems = _problems(tmp_path)
    assert code == 1
    missing = [p for p in problems if p["kind"] == "mirror-missing"]
    assert [p["file"] for p in missing] == [f".agent/task/{TASK}.md", "docs/TASKS.md"]
    evidence = [p for p in problems if p["kind"] == "evidence-not-found"]
    assert len(evidence) == 13 and len(problems) == 15
    assert {p["evidence"] for p in evidence} == {f".runs/{TASK}/cli/{SEED_RUN}/manifest.json"}
    assert evidence[0]["line"] == 6 and evidence[0]["item"] == "synchronize collateral"

    text = cli(tmp_path, "tasks", "check", TASK)
    assert text.returncode == 1
    assert (
        f"tasks/tasks-{TASK}.md:6: [x] item 'synchronize collateral' cites "
        f".runs/{TASK}/cli/{SEED_RUN}/manifest.json, which does not exist"
    ) in text.stdout.splitlines()
    assert f"docs/TASKS.md: checklist mirror of task {TASK} does not exist" in text.stdout


def test_seed_checklist_is_clean_once_its_run_and_mirrors_exist(tmp_path: Path) -> None:
    write_manifest(tmp_path, TASK, SEED_RUN)
    write(tmp_path, f"tasks/tasks-{TASK}.md", SEED_CHECKLIST)
    write(tmp_path, f".agent/task/{TASK}.md", SEED_CHECKLIST)
    write(
        tmp_path,
        "docs/TASKS.md",
        "# Task Checklist — Other (0101)\n- [ ] Other\n\n"
        + SEED_CHECKLIST
        + "\n# Task Checklist — Another (0303)\n- [ ] Another\n",
    )
    result = cli(tmp_path, "tasks", "check")
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "tasks check: 1 task, no problems"


def test_evidence_problems(tmp_path: Path) -> None:
    task = "0001-demo"
    good = write_manifest(tmp_path, task, RUN_A)
    failed = write_manifest(tmp_path, task, RUN_B, status="failed")
    other = write_manifest(tmp_path, "0002-other", RUN_A)
    write(tmp_path, f".runs/{task}/cli/broken/manifest.json", "{not json")
    body = (
        f"- [x] Good; Evidence: `{good}`\n"
        "- [x] Unproven — nothing cited\n"
        f"- [x] Failed run; Evidence: `{failed}`\n"
        f"- [x] Other task; Evidence: `{other}`\n"
        f"- [x] Corrupt; Evidence: `.runs/{task}/cli/broken/manifest.json`\n"
        f"- [ ] Open item citing a missing run; Evidence: `.runs/{task}/cli/x/manifest.json`\n"
    )
    _mirrors(tmp_path, task, body)
    code, problems = _problems(tmp_path, task)
    assert code == 1
    per_file = [
        (p["kind"], p["line"], p["item"]) for p in problems if p["file"] == f"tasks/tasks-{task}.md"
    ]
    assert per_file == [
        ("no-evidence", 4, "unproven"),
        ("evidence-not-succeeded", 5, "failed run"),
        ("evidence-wrong-task", 6, "other task"),
        ("evidence-unreadable", 7, "corrupt"),
        ("evidence-not-found", 8, "open item citing a missing run"),
    ]
    assert len(problems) == 3 * len(per_file)  # the same lines in the three mirrors
    messages = {p["kind"]: p["message"] for p in problems}
    assert (
        "a run that is failed (stage:test:failed), not succeeded"
        in messages["evidence-not-succeeded"]
    )
    assert f"a run of task 0002-other, not {task}" in messages["evidence-wrong-task"]


def test_mirrors_that_disagree(tmp_path: Path) -> None:
    task = "0003-mirrors"
    proof = write_manifest(tmp_path, task, RUN_A)
    write(
        tmp_path,
        CHECKLIST.format(task=task),
        f"- [x] Shared item; Evidence: `{proof}`\n- [ ] Only here\n",
    )
    write(tmp_path, AGENT.format(task=task), "- [ ] Shared item\n")
    write(
        tmp_path,
        "docs/TASKS.md",
        "# Tasks\n\n## 0002-other\n- [ ] Only here\n\n"
        f"## Task {task}\n- [x] SHARED   item; Evidence: `{proof}`\n- [ ] Only here\n",
    )
    code, problems = _problems(tmp_path, task)
    assert code == 1
    assert _kinds(problems) == [
        ("mirror-item-missing", f".agent/task/{task}.md", None),
        ("mirror-state-mismatch", f".agent/task/{task}.md", 1),
    ]
    assert "'only here' is missing here (it is at tasks/tasks-0003-mirrors.md:2)" in str(
        problems[0]["message"]
    )
    assert "is [x] in tasks/tasks-0003-mirrors.md:1" in str(problems[1]["message"])


def test_shared_mirror_without_a_section_for_the_task(tmp_path: Path) -> None:
    task = "0004-nosection"
    write(tmp_path, CHECKLIST.format(task=task), "- [ ] Item\n")
    write(tmp_path, AGENT.format(task=task), "- [ ] Item\n")
    write(tmp_path, "docs/TASKS.md", "# Tasks\n\n## 0004-nosection-other\n- [ ] Other\n")
    code, problems = _problems(tmp_path, task)
    assert code == 1
    assert _kinds(problems) == [("mirror-missing", "docs/TASKS.md", None)]
    assert "has no section" in str(problems[0]["message"])


def test_section_named_by_number_only(tmp_path: Path) -> None:
    task = "0005-numbered"
    write_index(tmp_path, {"id": "0005", "slug": "numbered", "title": "Numbered", "status": "open"})
    body = "- [ ] Item\n"
    _mirrors(
        tmp_path, task, body, tasks_md=f"# Tasks\n\n## Numbered (0005)\n{body}## 00050\n- [ ] X\n"
    )
    assert _problems(tmp_path) == (0, [])


def test_collateral_named_by_the_index(tmp_path: Path) -> None:
    task = "0006-collateral"
    entry = {
        "id": "0006",
        "slug": "collateral",
        "title": "Collateral",
        "path": "docs/PRD.md",
        "status": "open",
        "paths": {
            "tech_spec": "docs/TECH_SPEC.md",
            "action_plan": "docs/missing.md",
            "spec": "specs",
        },
    }
    write_index(tmp_path, entry)
    _mirrors(tmp_path, task, "- [ ] Item\n")
    write(tmp_path, "docs/PRD.md", "Covers Task 0006 and others.\n")
    write(tmp_path, "docs/TECH_SPEC.md", "Covers task 00061 and 10006 only.\n")
    (tmp_path / "specs").mkdir()
    code, problems = _problems(tmp_path, "0006")
    assert code == 1
    assert _kinds(problems) == [
        ("collateral-unrelated", "docs/TECH_SPEC.md", None),
        ("collateral-missing", "docs/missing.md", None),
    ]
    assert "paths.action_plan of task 0006-collateral" in str(problems[1]["message"])


def test_task_missing_from_an_existing_index(tmp_path: Path) -> None:
    write_index(tmp_path)
    _mirrors(tmp_path, "0007-unindexed", "- [ ] Item\n")
    code, problems = _problems(tmp_path)
    assert code == 1
    assert _kinds(problems) == [("not-in-index", "tasks/index.json", None)]


@pytest.mark.slow
def test_task_names_resolve_through_the_index(tmp_path: Path) -> None:
    write_index(
        tmp_path,
        {"id": "0010", "slug": "alpha", "title": "A", "status": "open"},
        {"id": 11, "slug": "beta", "task_key": "beta-key", "title": "B", "status": "open"},
    )
    for task in ("0010-alpha", "beta-key"):
        _mirrors(
            tmp_path,
            task,
            "- [ ] Item\n",
            tasks_md="## 0010-alpha\n- [ ] Item\n## beta-key\n- [ ] Item\n",
        )
    for name, task in (
        ("0010", "0010-alpha"),
        ("0010-alpha", "0010-alpha"),
        ("11", "beta-key"),
        ("11-beta", "beta-key"),
    ):
        code, document = cli_json(tmp_path, "tasks", "check", name)
        assert (code, [t["task"] for t in document["tasks"]]) == (0, [task])
    code, document = cli_json(tmp_path, "tasks", "check")
    assert (code, [t["task"] for t in document["tasks"]]) == (0, ["0010-alpha", "beta-key"])


def test_configured_mirrors(tmp_path: Path) -> None:
    task = "0008-config"
    write(
        tmp_path,
        "codex.orchestrator.json",
        json.dumps({"tasks": {"mirrors": ["checklists/{task}.md"]}}),
    )
    write(tmp_path, f"checklists/{task}.md", "- [x] Done without proof\n")
    code, problems = _problems(tmp_path)
    assert code == 1
    assert _kinds(problems) == [("no-evidence", f"checklists/{task}.md", 1)]


@pytest.mark.slow
def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    assert_usage_error(cli(tmp_path, "tasks", "check", "../etc"), "invalid task id")
    assert_usage_error(
        cli(tmp_path, "tasks", "check", "0404-nowhere"), "unknown task '0404-nowhere'"
    )
    write(tmp_path, "tasks/index.json", '{"items": [\n  {"id": 1,}\n]}')
    assert_usage_error(cli(tmp_path, "tasks", "check"), "tasks/index.json:2:")
    write(tmp_path, "tasks/index.json", "[]")
    assert_usage_error(cli(tmp_path, "tasks", "check"), 'no "items" list')
    write_index(tmp_path)
    write(
        tmp_path, "codex.orchestrator.json", json.dumps({"tasks": {"mirrors": ["../x/{task}.md"]}})
    )
    assert_usage_error(cli(tmp_path, "tasks", "check"), "tasks.mirrors[0]")
    code, document = cli_json(tmp_path, "tasks", "check", "a/b")
    assert code == 2 and "invalid task id" in document["error"]


def test_no_tasks_is_clean(tmp_path: Path) -> None:
    result = cli(tmp_path, "tasks", "check")
    assert result.returncode == 0
    assert "no tasks found" in result.stdout


def test_task_slug_is_tolerant(tmp_path: Path) -> None:
    assert task_slug(tmp_path, "0001-a") is None
    write_index(
        tmp_path, {"id": "0001", "slug": "a", "title": "A"}, {"task_key": "k", "slug": "kk"}
    )
    assert task_slug(tmp_path, "0001-a") == "a"
    assert task_slug(tmp_path, "0001") == "a"
    assert task_slug(tmp_path, "k") == "kk"
    assert task_slug(tmp_path, "zzz") is None
    write(tmp_path, "tasks/index.json", "{corrupt")
    assert task_slug(tmp_path, "0001-a") is None


@pytest.mark.slow
def test_a_thousand_tasks_check_in_seconds(tmp_path: Path) -> None:
    items, sections = [], ["# Tasks\n"]
    for number in range(1000):
        task = f"{number:04d}-task"
        proof = write_manifest(tmp_path, task, RUN_A)
        body = "".join(f"- [x] Item {i} — work; Evidence: `{proof}`\n" for i in range(5))
        items.append({"id": f"{number:04d}", "slug": "task", "title": task, "status": "done"})
        write(tmp_path, CHECKLIST.format(task=task), body)
        write(tmp_path, AGENT.format(task=task), body)
        sections.append(f"\n## {task}\n\n{body}")
    write(tmp_path, "docs/TASKS.md", "".join(sections))
    write_index(tmp_path, *items)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code, document = cli_json(tmp_path, "tasks", "check")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert (code, len(document["tasks"]), document["problem_count"]) == (0, 1000, 0)
    # CPU seconds of the check, not wall time: a loaded machine cannot fail it, a quadratic
    # check (minutes on a thousand tasks) still does.
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 15


def test_checklist_paths_named_by_the_index_are_mirrors(tmp_path: Path) -> None:
    task = "0009-custom"
    paths = {"task": "work/0009.md", "agent_task": f".agent/task/{task}.md"}
    write_index(tmp_path, {"id": "0009", "slug": "custom", "title": "C", "paths": paths})
    _mirrors(tmp_path, task, "- [ ] Item\n")
    write(tmp_path, "work/0009.md", "- [x] Item\n")
    code, problems = _problems(tmp_path, task)
    assert code == 1
    assert [(p["kind"], p["file"], p["line"]) for p in problems] == [
        ("mirror-state-mismatch", f".agent/task/{task}.md", 3),
        ("mirror-state-mismatch", "docs/TASKS.md", 5),
        ("mirror-state-mismatch", f"tasks/tasks-{task}.md", 3),
        ("no-evidence", "work/0009.md", 1),
    ]
