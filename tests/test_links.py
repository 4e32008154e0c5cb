"""Links never take a write (or a read of a named file) out of the repository.

Each test plants a real symbolic link where the tool writes and checks that the victim outside
the repository is untouched, and that the refusal is one line, never a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import Repo, assert_one_line_error
from helpers.processes import wait_for
from helpers.runctl import try_manifest

PRECIOUS = "precious\n"
OK_STAGE = {"id": "ok", "command": "echo fine"}
TASK = "0300-links"


def _victim(repo: Repo, name: str = "victim") -> Path:
    victim = repo.root.parent / name
    victim.write_text(PRECIOUS)
    return victim


def test_a_linked_state_lock_is_not_followed(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    victim = _victim(repo)
    (repo.root / ".runs").mkdir()
    (repo.root / ".runs" / "default.lock").symlink_to(victim)
    result = repo.cli("start")
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == PRECIOUS
    assert "symbolic link" in result.stderr
    assert (repo.root / ".runs" / "default.lock").is_symlink()


def test_a_linked_metrics_file_is_not_appended_to(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    victim = _victim(repo)
    (repo.root / ".runs" / "default").mkdir(parents=True)
    (repo.root / ".runs" / "default" / "metrics.json").symlink_to(victim)
    code, document = repo.start_json()
    assert code == 0
    assert victim.read_text() == PRECIOUS
    assert repo.manifest(document)["metrics_recorded"] is False


def test_a_linked_state_json_is_replaced_not_written_through(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    victim = _victim(repo)
    (repo.root / "out" / "default").mkdir(parents=True)
    (repo.root / "out" / "default" / "state.json").symlink_to(victim)
    assert repo.cli("start").returncode == 0
    assert victim.read_text() == PRECIOUS
    state = repo.root / "out" / "default" / "state.json"
    assert not state.is_symlink()
    assert len(json.loads(state.read_text())["runs"]) == 1


def _outside_dir(repo: Repo) -> Path:
    outside = repo.root.parent / "elsewhere"
    outside.mkdir()
    return outside


@pytest.mark.slow
def test_record_directories_linked_outside_are_refused(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    outside = _outside_dir(repo)
    # The default roots, not the ones the suite names by variable: the new layout, and the
    # old one (.runs and out) a repository that has .runs keeps.
    for variable in ("CODEX_ORCHESTRATOR_RUNS_DIR", "CODEX_ORCHESTRATOR_OUT_DIR"):
        del repo.env[variable]
    cases = {
        ".codex-orchestrator/runs": repo.root / ".codex-orchestrator",
        ".runs": repo.root / ".runs",
        "out": repo.root / "out",
        ".runs/default": repo.root / ".runs" / "default",
        ".runs/default/cli": repo.root / ".runs" / "default" / "cli",
    }
    for shown, link in cases.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if shown == "out":
            (repo.root / ".runs").mkdir(exist_ok=True)
        link.symlink_to(outside, target_is_directory=True)
        result = repo.cli("start", "--format", "json")
        assert_one_line_error(result, 2, shown, "outside")
        assert json.loads(result.stdout)["exit_code"] == 2
        assert list(outside.iterdir()) == [], shown
        link.unlink()


def test_explicit_record_roots_may_be_anywhere(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    runs, out = _outside_dir(repo) / "runs", repo.root.parent / "state"
    env = {"CODEX_ORCHESTRATOR_RUNS_DIR": str(runs), "CODEX_ORCHESTRATOR_OUT_DIR": str(out)}
    code, document = repo.start_json(env=env)
    assert code == 0
    assert Path(document["manifest"]).is_relative_to(runs)
    assert (out / "default" / "state.json").is_file()


def test_printed_paths_are_the_real_ones(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    (repo.root / "records").mkdir()
    (repo.root / ".runs").symlink_to("records", target_is_directory=True)
    code, document = repo.start_json()
    assert code == 0
    assert document["manifest"].startswith("records/default/cli/")
    assert repo.manifest(document)["artifact_root"].startswith("records/")
    status = repo.cli("status", document["run_id"], "--format", "json")
    assert json.loads(status.stdout)["manifest"] == document["manifest"]


def _task_repo(repo: Repo) -> tuple[str, Path]:
    """A task with one unchecked item and a succeeded run of it; returns (run id, mirror)."""
    repo.pipeline(OK_STAGE)
    mirror = repo.root / "tasks" / f"tasks-{TASK}.md"
    mirror.parent.mkdir(parents=True)
    mirror.write_text(f"# Task {TASK}\n\n- [ ] Ship it — soon\n")
    code, document = repo.start_json("--task", TASK)
    assert code == 0
    return document["run_id"], mirror


def test_tasks_mark_refuses_a_mirror_linked_outside(repo: Repo) -> None:
    run_id, mirror = _task_repo(repo)
    victim = repo.root.parent / "victim.md"
    victim.write_text(mirror.read_text())
    mirror.unlink()
    mirror.symlink_to(victim)
    result = repo.cli("tasks", "mark", TASK, "ship it", "--run", run_id)
    assert_one_line_error(result, 2, f"tasks/tasks-{TASK}.md", "outside", "replace the link")
    assert victim.read_text() == f"# Task {TASK}\n\n- [ ] Ship it — soon\n"
    assert mirror.is_symlink()


def test_tasks_mark_edits_through_a_link_inside_the_repository(repo: Repo) -> None:
    run_id, mirror = _task_repo(repo)
    real = repo.root / "docs" / "checklist.md"
    real.parent.mkdir()
    mirror.rename(real)
    mirror.symlink_to(Path("..") / "docs" / "checklist.md")
    result = repo.cli("tasks", "mark", TASK, "ship it", "--run", run_id)
    assert result.returncode == 0, result.stderr
    assert mirror.is_symlink()
    assert "- [x] Ship it" in real.read_text()


@pytest.mark.slow
def test_a_tasks_directory_linked_outside_is_neither_read_nor_written(repo: Repo) -> None:
    run_id, mirror = _task_repo(repo)
    outside = _outside_dir(repo)
    (repo.root / "tasks").rename(outside / "tasks")
    (repo.root / "tasks").symlink_to(outside / "tasks", target_is_directory=True)
    before = (outside / "tasks" / mirror.name).read_text()
    mark = repo.cli("tasks", "mark", TASK, "ship it", "--run", run_id)
    assert_one_line_error(mark, 2, "outside")
    new = repo.cli("tasks", "new", "0301-other", "--title", "Other")
    assert_one_line_error(new, 2, "outside")
    assert (outside / "tasks" / mirror.name).read_text() == before
    assert sorted(path.name for path in (outside / "tasks").iterdir()) == [mirror.name]
    assert not (repo.root / ".agent").exists() and not (repo.root / "docs").exists()


def _failed_run(repo: Repo) -> tuple[Path, dict[str, object]]:
    repo.pipeline({"id": "boom", "command": "echo oops >&2; exit 3"})
    code, document = repo.start_json()
    assert code == 1
    return repo.root / str(document["manifest"]), repo.manifest(document)


def test_review_reads_no_error_file_outside_the_run(repo: Repo) -> None:
    path, manifest = _failed_run(repo)
    secret = repo.root / "secret.json"
    secret.write_text(json.dumps({"reason": "SECRET", "details": {"stderr": "SECRET"}}))
    manifest["commands"][0]["error_file"] = "secret.json"  # type: ignore[index]
    path.write_text(json.dumps(manifest))
    result = repo.cli("review", str(manifest["run_id"]), "--format", "json")
    assert result.returncode == 0, result.stderr
    review = json.loads(result.stdout)["review"]
    assert "SECRET" not in review
    assert "outside the run directory" in review


@pytest.mark.slow
def test_review_reads_no_fifo_or_linked_error_file(repo: Repo) -> None:
    path, manifest = _failed_run(repo)
    run_dir = path.parent
    error_file = str(manifest["commands"][0]["error_file"])  # type: ignore[index]
    target = repo.root / error_file
    target.unlink()
    os.mkfifo(target)
    result = repo.cli("review", str(manifest["run_id"]), "--format", "json", timeout=20)
    assert result.returncode == 0, result.stderr
    assert "not a regular file" in json.loads(result.stdout)["review"]
    target.unlink()
    secret = repo.root.parent / "secret.json"
    secret.write_text(json.dumps({"reason": "SECRET", "details": {}}))
    target.symlink_to(secret)
    result = repo.cli("review", str(manifest["run_id"]), "--format", "json")
    assert "SECRET" not in json.loads(result.stdout)["review"]
    assert run_dir.is_dir()


@pytest.mark.slow
def test_resume_does_not_append_events_through_a_link(repo: Repo) -> None:
    path, manifest = _failed_run(repo)
    victim = _victim(repo)
    events = path.parent / "runner.ndjson"
    events.unlink()
    events.symlink_to(victim)
    result = repo.cli("resume", str(manifest["run_id"]))
    assert result.returncode == 1, result.stderr  # the stage fails again; the run ends
    assert "events not recorded" in result.stderr and "symbolic link" in result.stderr
    assert victim.read_text() == PRECIOUS
    assert json.loads(path.read_text())["status"] == "failed"


def test_resume_refuses_a_run_whose_log_directory_is_a_link(repo: Repo) -> None:
    path, manifest = _failed_run(repo)
    outside = _outside_dir(repo)
    commands = path.parent / "commands"
    for entry in commands.iterdir():
        entry.rename(outside / entry.name)
    commands.rmdir()
    commands.symlink_to(outside, target_is_directory=True)
    before = sorted(entry.name for entry in outside.iterdir())
    result = repo.cli("resume", str(manifest["run_id"]))
    assert_one_line_error(result, 2, "commands is a link")
    assert sorted(entry.name for entry in outside.iterdir()) == before


def test_a_linked_pending_directory_is_neither_written_nor_emptied(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    outside = _outside_dir(repo)
    (outside / "keep.json").write_text("{}")
    (repo.root / "out" / "default").mkdir(parents=True)
    (repo.root / "out" / "default" / "state.pending").symlink_to(outside)
    code, document = repo.start_json()
    assert code == 0
    assert [path.name for path in outside.iterdir()] == ["keep.json"]
    state = json.loads((repo.root / "out" / "default" / "state.json").read_text())
    assert [entry["runId"] for entry in state["runs"]] == [document["run_id"]]


@pytest.mark.slow
def test_review_replaces_a_linked_review_md_and_refuses_a_linked_manifest(repo: Repo) -> None:
    path, manifest = _failed_run(repo)
    victim = _victim(repo)
    review = path.parent / "review.md"
    review.symlink_to(victim)
    result = repo.cli("review", str(manifest["run_id"]))
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == PRECIOUS
    assert not review.is_symlink() and "# Review" in review.read_text()
    outside_manifest = repo.root.parent / "manifest.json"
    path.rename(outside_manifest)
    path.symlink_to(outside_manifest)
    before = outside_manifest.read_text()
    for command in ("review", "status", "resume"):
        refused = repo.cli(command, str(manifest["run_id"]))
        assert_one_line_error(refused, 2, "manifest")
    assert outside_manifest.read_text() == before


def test_tasks_new_refuses_before_creating_anything(repo: Repo) -> None:
    outside = _outside_dir(repo)
    (repo.root / "docs").symlink_to(outside, target_is_directory=True)
    result = repo.cli("tasks", "new", "0302-new", "--title", "New")
    assert_one_line_error(result, 2, "docs/", "outside")
    assert not (repo.root / "tasks").exists() and not (repo.root / ".agent").exists()
    assert list(outside.iterdir()) == []


def _tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: the victim's whole state."""
    return {
        str(item.relative_to(path)): item.read_bytes()
        for item in sorted(path.rglob("*"))
        if item.is_file()
    }


@pytest.mark.slow
def test_links_prune_and_runs_refuse_a_task_directory_linked_out(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    for _ in range(2):
        assert repo.start_json("--task", "moved")[0] == 0
    outside = _outside_dir(repo)
    task_dir = repo.root / ".runs" / "moved"
    task_dir.rename(outside / "moved")  # the task's runs now live outside, behind a link
    task_dir.symlink_to(outside / "moved", target_is_directory=True)
    before = _tree(outside)
    assert len([name for name in before if name.endswith("manifest.json")]) == 2
    for args in (
        ("prune", "--keep", "0", "--include-evidence"),
        ("prune", "--task", "moved", "--keep", "0"),
        ("runs", "--task", "moved"),
        ("report", "--task", "moved"),
    ):
        assert_one_line_error(repo.cli(*args), 2, ".runs/moved", "outside")
    assert _tree(outside) == before


@pytest.mark.slow
def test_links_report_writes_nothing_through_a_linked_child_run_directory(repo: Repo) -> None:
    repo.write_config(
        {
            "defaultPipeline": "parent",
            "pipelines": [
                {"id": "parent", "stages": [{"id": "kid", "kind": "subpipeline", "pipeline": "c"}]},
                {"id": "c", "stages": [OK_STAGE]},
            ],
        }
    )
    code, document = repo.start_json()
    assert code == 0
    child_id = repo.manifest(document)["child_runs"][0]["run_id"]
    child_dir = (repo.root / document["artifact_root"]).parent / child_id
    outside = _outside_dir(repo)
    child_dir.rename(outside / child_id)
    child_dir.symlink_to(outside / child_id, target_is_directory=True)
    before = _tree(outside)
    result = repo.cli("report", document["run_id"])
    assert result.returncode == 0, result.stderr
    assert _tree(outside) == before  # no report.html landed at the link's target
    page = (repo.root / document["artifact_root"] / "report.html").read_text()
    assert f"child run {child_id}: no report" in page and "symbolic link" in page


@pytest.mark.slow
@pytest.mark.parametrize("planted", ["link", "fifo"])
def test_links_resume_detach_neither_writes_through_nor_waits_on_its_log(
    repo: Repo, planted: str
) -> None:
    marker = repo.root / "fixed"
    repo.pipeline({"id": "flaky", "command": f"test -e {marker}"})
    code, document = repo.start_json()
    assert code == 1
    marker.write_text("")
    run_dir = repo.root / document["artifact_root"]
    log = run_dir / "orchestrator.log"
    victim = _victim(repo)
    if planted == "link":
        log.symlink_to(victim)
    else:
        os.mkfifo(log)  # a plain open for appending would wait for a reader forever
    result = repo.cli("resume", document["run_id"], "--detach", "--format", "json", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "replaced with a fresh file" in result.stderr
    wait_for(lambda: (try_manifest(run_dir) or {}).get("status") == "succeeded")
    assert victim.read_text() == PRECIOUS
    assert log.is_file() and not log.is_symlink()
