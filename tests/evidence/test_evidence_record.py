"""Evidence that travels: ``tasks mark`` writes a committed, token-free evidence record that
``tasks check`` trusts in a fresh clone (run directories are not committed) and holds against
the manifest where the manifest is present. Real runs, a real ``git clone``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .helpers import cli, cli_json, git, git_repo, write, write_manifest

TASK = "0300-travel"
RECORD = f"tasks/evidence/{TASK}.json"
ITEM = "run diagnostics"  # an item of the scaffolded checklists


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A committed repository whose checklist item is marked with a real succeeded run (its
    run directory ignored by git, as it is in real repositories), and the run id."""
    root = git_repo(tmp_path_factory.mktemp("origin") / "repo")
    write(root, "codex.orchestrator.json", json.dumps(_config()))
    write(root, ".gitignore", ".runs/\n")
    assert cli(root, "tasks", "new", TASK, "--title", "Travel").returncode == 0
    code, started = cli_json(root, "start", "--task", TASK)
    assert (code, started["status"]) == (0, "succeeded"), started
    code, marked = cli_json(root, "tasks", "mark", TASK, ITEM, "--run", started["run_id"])
    assert code == 0, marked
    assert marked["record"] == RECORD
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "mark")
    return root, str(started["run_id"])


def _config() -> dict[str, Any]:
    stages = [{"id": "check", "command": "echo all good"}]
    return {"defaultPipeline": "checks", "pipelines": [{"id": "checks", "stages": stages}]}


def _clone(origin: Path, tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    assert not (clone / ".runs").exists()
    return clone


def _problems(root: Path) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    code, document = cli_json(root, "tasks", "check", TASK)
    (task,) = document["tasks"]
    return code, task["problems"], task["notes"]


def _edit_record(root: Path, **facts: Any) -> None:
    record = json.loads((root / RECORD).read_text())
    entry = record["items"][ITEM]
    entry.update(facts)
    (root / RECORD).write_text(json.dumps(record, indent=2))


@pytest.mark.slow
def test_the_record_holds_the_runs_facts_and_no_token_or_path(marked: tuple[Path, str]) -> None:
    root, run_id = marked
    text = (root / RECORD).read_text()
    entry = json.loads(text)["items"][ITEM]
    assert {key: entry[key] for key in ("run_id", "task_id", "pipeline_id", "status")} == {
        "run_id": run_id,
        "task_id": TASK,
        "pipeline_id": "checks",
        "status": "succeeded",
    }
    assert entry["stages"] == [{"id": "check", "status": "succeeded", "summary": "all good"}]
    assert len(entry["proof_sha256"]) == 64 and entry["completed_at"]
    (token_file,) = (root / ".runs").rglob(".resume-token")
    assert token_file.read_text().strip() not in text
    assert str(root) not in text and "/" not in json.dumps(entry["run_id"])
    assert git(root, "ls-files", RECORD).strip() == RECORD  # committed


@pytest.mark.slow
def test_a_fresh_clone_checks_clean_on_the_record_and_says_so(
    marked: tuple[Path, str], tmp_path: Path
) -> None:
    origin, run_id = marked
    clone = _clone(origin, tmp_path)

    code, problems, notes = _problems(clone)
    assert (code, problems) == (0, [])
    (note,) = notes
    assert (note["kind"], note["file"]) == ("evidence-from-record", RECORD)
    assert f"the evidence record vouches for it: run {run_id}" in note["message"]
    text = cli(clone, "tasks", "check", TASK).stdout
    assert "vouches for it" in text and "(note)" in text


@pytest.mark.slow
def test_a_tampered_record_in_a_fresh_clone_is_one_clear_problem(
    marked: tuple[Path, str], tmp_path: Path
) -> None:
    clone = _clone(marked[0], tmp_path)
    _edit_record(clone, stages=[{"id": "check", "status": "succeeded", "summary": "edited"}])

    code, problems, notes = _problems(clone)
    assert (code, notes) == (1, [])
    (problem,) = problems
    assert (problem["kind"], problem["file"]) == ("evidence-record-invalid", RECORD)
    message = problem["message"]
    assert "\n" not in message and "was changed by hand" in message
    assert f"tasks mark {TASK} '{ITEM}' --run RUN" in message


@pytest.mark.slow
def test_a_record_that_disagrees_with_the_present_manifest_is_a_problem(
    marked: tuple[Path, str], tmp_path: Path
) -> None:
    clone = _clone(marked[0], tmp_path)
    git(clone, "config", "core.hooksPath", "/dev/null")
    # The manifest is present (copied in, as in the original checkout) and the record's
    # digest is recomputed by a careful forger: the facts still differ from the manifest's.
    import shutil

    shutil.copytree(marked[0] / ".runs", clone / ".runs")
    from codex_orchestrator.evidence.evidence_record import proof_digest

    record = json.loads((clone / RECORD).read_text())
    entry = record["items"][ITEM]
    entry["stages"][0]["summary"] = "forged"
    entry["proof_sha256"] = proof_digest(entry)
    (clone / RECORD).write_text(json.dumps(record))

    code, problems, _ = _problems(clone)
    (problem,) = problems
    assert (code, problem["kind"]) == (1, "evidence-record-mismatch")
    assert "stages differs" in problem["message"] and "\n" not in problem["message"]


@pytest.mark.slow
def test_a_present_manifest_is_still_checked_first(marked: tuple[Path, str]) -> None:
    root, _ = marked
    code, problems, notes = _problems(root)
    assert (code, problems, notes) == (0, [], [])


def test_a_record_directory_linked_out_of_the_repository_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    outside.mkdir()
    run_id = "2025-11-01T00-00-00-000Z-aaaaaaaa"
    write_manifest(root, TASK, run_id)
    checklist = write(root, f"tasks/tasks-{TASK}.md", f"# T\n- [ ] {ITEM}\n")
    (root / "tasks/evidence").symlink_to(outside)

    result = cli(root, "tasks", "mark", TASK, ITEM, "--run", run_id)
    assert result.returncode == 2 and "outside" in result.stderr, result.stderr
    assert list(outside.iterdir()) == [] and "[ ]" in checklist.read_text()


@pytest.mark.slow
def test_a_run_in_which_nothing_ran_is_never_evidence(tmp_path: Path) -> None:
    """An empty repository: diagnostics skips every stage, the run is ``skipped`` (exit 3), and
    tasks mark refuses it, writing no record and changing no mirror."""
    root = git_repo(tmp_path / "repo")
    checklist = write(root, f"tasks/tasks-{TASK}.md", f"# T\n- [ ] {ITEM}\n")
    code, started = cli_json(root, "start", "diagnostics", "--task", TASK)
    assert (code, started["status"]) == (3, "skipped"), started

    result = cli(root, "tasks", "mark", TASK, ITEM, "--run", started["run_id"])
    assert result.returncode == 2 and "not succeeded" in result.stderr, result.stderr
    assert "[ ]" in checklist.read_text() and not (root / RECORD).exists()
