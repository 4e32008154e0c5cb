"""``tasks mark``: flip an item in every mirror at once, only with a succeeded run of the task."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import assert_usage_error, cli, cli_json, write, write_index, write_manifest

TASK = "0100-mark"
RUN = "2025-11-01T00-00-00-000Z-aaaaaaaa"
FAILED_RUN = "2025-11-01T00-00-00-000Z-bbbbbbbb"
FOREIGN_RUN = "2025-11-01T00-00-00-000Z-cccccccc"
MANIFEST = f".runs/{TASK}/cli/{RUN}/manifest.json"
CHECKLIST = f"tasks/tasks-{TASK}.md"
AGENT = f".agent/task/{TASK}.md"


def _setup(root: Path) -> dict[str, bytes]:
    """Three mirrors (one CRLF without final newline) and three runs; the files' bytes."""
    write_manifest(root, TASK, RUN)
    write_manifest(root, TASK, FAILED_RUN, status="failed")
    write_manifest(root, "0200-other", FOREIGN_RUN)
    write_index(root, {"id": "0100", "slug": "mark", "title": "Mark", "status": "open"})
    files = {
        CHECKLIST: b"# Mark\n\n- [ ] Synchronize collateral \xe2\x80\x94 docs\n- [ ] Run diagnostics\n"
        b"- [ ] Reviewer hand-off\n",
        AGENT: b"# Mark\r\n- [ ] Synchronize collateral\r\n- [ ] Run diagnostics  \r\n"
        b"- [ ] Reviewer hand-off",
        "docs/TASKS.md": b"# Tasks\n\n## 0200-other\n- [ ] Run diagnostics\n\n"
        b"## Task 0100-mark\n- [ ] Run diagnostics; Evidence: `old/manifest.json`.\n"
        b"- [ ] Reviewer hand-off\n",
    }
    for path, data in files.items():
        write(root, path, data)
    return files


def _snapshot(root: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    return {path: (root / path).read_bytes() for path in files}


def test_mark_flips_the_item_in_every_mirror_keeping_other_bytes(tmp_path: Path) -> None:
    files = _setup(tmp_path)
    code, document = cli_json(tmp_path, "tasks", "mark", "0100", "run diag", "--run", RUN)
    assert code == 0
    assert document["changed"] == [CHECKLIST, AGENT, "docs/TASKS.md"]
    assert document["evidence"] == MANIFEST and document["item"] == "run diagnostics"
    after = _snapshot(tmp_path, files)
    evidence = f"; Evidence: `{MANIFEST}`".encode()
    assert after[CHECKLIST] == files[CHECKLIST].replace(
        b"- [ ] Run diagnostics\n", b"- [x] Run diagnostics" + evidence + b"\n"
    )
    assert after[AGENT] == files[AGENT].replace(
        b"- [ ] Run diagnostics  \r\n", b"- [x] Run diagnostics" + evidence + b"  \r\n"
    )
    assert after["docs/TASKS.md"] == files["docs/TASKS.md"].replace(
        b"- [ ] Run diagnostics; Evidence: `old/manifest.json`.",
        b"- [x] Run diagnostics; Evidence: `old/manifest.json`, `" + MANIFEST.encode() + b"`.",
    )
    # the other task's section of the shared mirror is untouched
    assert b"## 0200-other\n- [ ] Run diagnostics\n" in after["docs/TASKS.md"]


def test_mark_edits_the_last_line_without_adding_a_newline(tmp_path: Path) -> None:
    files = _setup(tmp_path)
    assert cli(tmp_path, "tasks", "mark", TASK, "Reviewer", "--run", RUN).returncode == 0
    agent = (tmp_path / AGENT).read_bytes()
    assert agent.endswith(b"- [x] Reviewer hand-off; Evidence: `" + MANIFEST.encode() + b"`")
    assert agent.startswith(files[AGENT].rsplit(b"\r\n", 1)[0] + b"\r\n")


def test_mark_again_changes_nothing(tmp_path: Path) -> None:
    files = _setup(tmp_path)
    assert cli(tmp_path, "tasks", "mark", TASK, "sync", "--run", RUN).returncode == 0
    before = _snapshot(tmp_path, files)
    code, document = cli_json(tmp_path, "tasks", "mark", TASK, "SYNC", "--run", RUN)
    assert code == 0
    assert document["changed"] == []
    assert document["unchanged"] == [CHECKLIST, AGENT]
    assert document["without_item"] == ["docs/TASKS.md"]
    assert _snapshot(tmp_path, files) == before


@pytest.mark.slow
def test_check_after_marking_reports_only_what_mark_cannot_fix(tmp_path: Path) -> None:
    _setup(tmp_path)
    for item in ("sync", "run", "reviewer"):
        assert cli(tmp_path, "tasks", "mark", TASK, item, "--run", RUN).returncode == 0
    code, document = cli_json(tmp_path, "tasks", "check", TASK)
    kinds = {problem["kind"] for problem in document["tasks"][0]["problems"]}
    # docs/TASKS.md lacks 'synchronize collateral' and cites a missing old manifest
    assert code == 1 and kinds == {"mirror-item-missing", "evidence-not-found"}


@pytest.mark.slow
def test_refusals_change_no_file(tmp_path: Path) -> None:
    files = _setup(tmp_path)
    cases = [
        (("0100", "r", "--run", RUN), "ambiguous"),
        (("0100", "nothing like it", "--run", RUN), "no item of task 0100-mark starts with"),
        (("0100", "sync", "--run", FAILED_RUN), "is failed (stage:test:failed), not succeeded"),
        (("0100", "sync", "--run", FOREIGN_RUN), "belongs to task 0200-other, not 0100-mark"),
        (("0100", "sync", "--run", "2025-11-01T00-00-00-000Z-dddddddd"), "unknown run"),
        (("0100", "sync", "--run", "../x"), "invalid run id"),
        (("0999", "sync", "--run", RUN), "unknown task '0999'"),
        (("0100", " ", "--run", RUN), "the item is empty"),
    ]
    for args, needle in cases:
        assert_usage_error(cli(tmp_path, "tasks", "mark", *args), needle)
    line = assert_usage_error(cli(tmp_path, "tasks", "mark", "0100", "r", "--run", RUN))
    assert "'run diagnostics'" in line and "'reviewer hand-off'" in line
    write(tmp_path, f".runs/{TASK}/cli/{RUN}/manifest.json", "{torn")
    assert_usage_error(
        cli(tmp_path, "tasks", "mark", "0100", "sync", "--run", RUN), "cannot be parsed"
    )
    assert _snapshot(tmp_path, files) == files


def test_mark_keeps_the_file_mode(tmp_path: Path) -> None:
    _setup(tmp_path)
    (tmp_path / CHECKLIST).chmod(0o600)
    assert cli(tmp_path, "tasks", "mark", TASK, "sync", "--run", RUN).returncode == 0
    assert (tmp_path / CHECKLIST).stat().st_mode & 0o777 == 0o600
    assert not [p for p in (tmp_path / "tasks").iterdir() if p.name.endswith(".tmp")]
