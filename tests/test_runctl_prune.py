"""``prune`` through the real CLI: evidence, children, history marks, concurrent starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Repo
from helpers.lock_holder import lock_held_elsewhere
from helpers.runctl import json_cli, metrics_lines, run_dirs, state_entries, try_manifest


def _family_config(repo: Repo) -> None:
    repo.write_config(
        {
            "defaultPipeline": "parent",
            "pipelines": [
                {
                    "id": "parent",
                    "stages": [{"id": "kid", "kind": "subpipeline", "pipeline": "child"}],
                },
                {"id": "child", "stages": [{"id": "c", "command": "echo child"}]},
                {"id": "solo", "stages": [{"id": "s", "command": "echo solo"}]},
            ],
        }
    )


@pytest.mark.slow
def test_prune_keeps_evidence_children_and_history(repo: Repo) -> None:
    _family_config(repo)
    parents = [repo.start_json("--task", "fam")[1] for _ in range(3)]
    solos = [repo.start_json("solo", "--task", "fam")[1] for _ in range(3)]
    cited = solos[0]
    (repo.root / "tasks").mkdir()
    (repo.root / "tasks" / "tasks-fam.md").write_text(
        f"# fam\n- [x] solo works — Evidence: `{cited['manifest']}`\n"
    )
    children = {p["run_id"]: repo.manifest(p)["child_runs"][0]["run_id"] for p in parents}
    before_dirs = {d.name for d in run_dirs(repo, "fam")}
    assert len(before_dirs) == 9
    metrics_before = (repo.root / ".runs" / "fam" / "metrics.json").read_bytes()

    code, dry = json_cli(repo, "prune", "--keep", "1", "--dry-run")
    assert code == 0 and dry["dry_run"] is True
    assert {d.name for d in run_dirs(repo, "fam")} == before_dirs
    assert not any(e.get("pruned") for e in state_entries(repo, "fam").values())

    code, done = json_cli(repo, "prune", "--keep", "1")
    assert code == 0
    removed = {row["run_id"] for row in done["removed"]}
    assert removed == dry_ids(dry)
    newest_parent = parents[-1]["run_id"]
    # kept: newest parent + its child (child of a kept run), newest child run, newest solo,
    # the cited solo; removed: two older parents, their children (their parents go), one solo.
    expected_removed = {
        parents[0]["run_id"],
        parents[1]["run_id"],
        children[parents[0]["run_id"]],
        children[parents[1]["run_id"]],
        solos[1]["run_id"],
    }
    assert removed == expected_removed
    left = {d.name for d in run_dirs(repo, "fam")}
    assert left == before_dirs - expected_removed
    assert cited["run_id"] in left and children[newest_parent] in left
    reasons = {item["run_id"]: item["reason"] for item in done["kept"]}
    assert "evidence" in reasons[cited["run_id"]]
    assert done["bytes_freed"] == sum(row["bytes"] for row in done["removed"]) > 0
    entries = state_entries(repo, "fam")
    assert len(entries) == 9
    assert {run_id for run_id, e in entries.items() if e.get("pruned")} == expected_removed
    assert (repo.root / ".runs" / "fam" / "metrics.json").read_bytes() == metrics_before
    _, listed = json_cli(repo, "runs", "--limit", "0")
    assert {row["run_id"] for row in listed["runs"] if row["pruned"]} == expected_removed
    assert len(listed["runs"]) == 9

    code, everything = json_cli(repo, "prune", "--keep", "0", "--include-evidence")
    assert code == 0 and cited["run_id"] in {row["run_id"] for row in everything["removed"]}
    assert run_dirs(repo, "fam") == []


def dry_ids(document: dict[str, list[dict[str, str]]]) -> set[str]:
    return {row["run_id"] for row in document["removed"]}


@pytest.mark.slow
def test_prune_without_index_counts_default_mirrors(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    runs = [repo.start_json("--task", "ev")[1] for _ in range(3)]
    (repo.root / ".agent" / "task").mkdir(parents=True)
    (repo.root / ".agent" / "task" / "other.md").write_text(f"- [ ] x `{runs[0]['manifest']}`\n")
    (repo.root / "docs").mkdir()
    (repo.root / "docs" / "TASKS.md").write_text(f"## ev\n- [x] y — `{runs[1]['manifest']}`\n")
    code, done = json_cli(repo, "prune", "--status", "succeeded")
    assert code == 0
    assert {row["run_id"] for row in done["removed"]} == {runs[2]["run_id"]}


@pytest.mark.slow
def test_prune_never_touches_a_live_run(repo: Repo) -> None:
    repo.pipeline({"id": "wait", "command": "while [ ! -e stop ]; do sleep 0.05; done"})
    proc = repo.spawn("start", "--task", "live")
    try:
        from helpers.processes import wait_for

        wait_for(
            lambda: (
                bool(run_dirs(repo, "live"))
                and (try_manifest(run_dirs(repo, "live")[0]) or {}).get("status") == "in_progress"
            )
        )
        code, done = json_cli(repo, "prune", "--keep", "0", "--include-evidence")
        assert code == 0 and done["removed"] == []
        assert {item["reason"] for item in done["kept"]} == {"live"}
    finally:
        (repo.root / "stop").touch()
        proc.wait(timeout=30)
    assert proc.returncode == 0


@pytest.mark.slow
def test_prune_beside_50_concurrent_starts_loses_nothing(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "echo hi"})
    for _ in range(5):
        repo.cli("start", "--task", "busy")
    starts = [repo.spawn("start", "--task", "busy", "--format", "json") for _ in range(50)]
    prunes = 0
    while any(proc.poll() is None for proc in starts) or prunes < 2:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "codex_orchestrator",
                "prune",
                "--keep",
                "2",
                "--format",
                "json",
            ],
            cwd=repo.root,
            env=repo.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        prunes += 1
    started = set()
    for proc in starts:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        started.add(json.loads(out)["run_id"])
    assert len(started) == 50
    metrics = {line["run_id"] for line in metrics_lines(repo, "busy")}
    assert len(metrics) == 55 and started <= metrics
    from helpers.runctl import raw_cli

    raw_cli(repo, "runs", "--limit", "1")  # a reader; merges nothing, changes nothing
    subprocess.run(
        [sys.executable, "-m", "codex_orchestrator", "prune", "--keep", "2"],
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    entries = state_entries(repo, "busy")
    assert set(entries) == metrics
    on_disk = {d.name for d in run_dirs(repo, "busy")}
    assert {run_id for run_id, e in entries.items() if not e.get("pruned")} == on_disk
    assert len(on_disk) == 2
    for run_dir in run_dirs(repo, "busy"):
        manifest = try_manifest(run_dir)
        assert manifest is not None and manifest["status"] == "succeeded"


@pytest.mark.slow
def test_prune_finishes_what_an_interrupted_prune_set_aside(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    first = repo.start_json("--task", "half")[1]
    repo.start_json("--task", "half")
    run_dir = repo.root / first["artifact_root"]
    hidden = run_dir.with_name(f".pruning-{first['run_id']}-abc123")
    run_dir.rename(hidden)  # as a prune killed between setting aside and marking leaves it
    _, listed = json_cli(repo, "runs")
    assert first["run_id"] in {row["run_id"] for row in listed["runs"]}
    code, done = json_cli(repo, "prune", "--keep", "5")
    assert code == 0 and [row["run_id"] for row in done["removed"]] == [first["run_id"]]
    assert not hidden.exists()
    assert state_entries(repo, "half")[first["run_id"]]["pruned"] is True


@pytest.mark.slow
def test_links_in_the_runs_root_are_never_followed(repo: Repo, tmp_path: Path) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    repo.start_json("--task", "linky")
    outside = tmp_path / "outside" / "2026-01-01T00-00-00-000Z-0000abcd"
    outside.mkdir(parents=True)
    (outside / "precious").write_text("keep me")
    (outside / "manifest.json").write_text(
        json.dumps(
            {
                "run_id": outside.name,
                "task_id": "linky",
                "pipeline_id": "a",
                "status": "succeeded",
                "started_at": "2026-01-01T00:00:00.000Z",
                "completed_at": "2026-01-01T00:00:01.000Z",
                "commands": [],
            }
        )
    )
    (repo.root / ".runs" / "linky" / "cli" / outside.name).symlink_to(outside)
    _, listed = json_cli(repo, "runs", "--limit", "0")
    assert outside.name not in {row["run_id"] for row in listed["runs"]}
    code, done = json_cli(repo, "prune", "--keep", "0", "--include-evidence")
    assert code == 0 and outside.name not in {row["run_id"] for row in done["removed"]}
    assert (outside / "precious").read_text() == "keep me"


def _reasons(document: dict[str, list[dict[str, str]]]) -> dict[str, str]:
    return {item["run_id"]: item["reason"] for item in document["kept"]}


def _bytes(directory: Path) -> int:
    return sum(path.lstat().st_size for path in directory.rglob("*") if path.is_file())


@pytest.mark.slow
def test_prune_races_skip_a_run_whose_driver_lock_is_held(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    first = repo.start_json("--task", "held")[1]
    second = repo.start_json("--task", "held")[1]
    run_dir = repo.root / first["artifact_root"]
    # Another process drives the run (as `resume` does before it resets the manifest, which
    # still says the run ended): prune must leave it alone.
    with lock_held_elsewhere(run_dir / ".driver.lock"):
        code, done = json_cli(repo, "prune", "--keep", "0", "--include-evidence")
        assert code == 0
        assert [row["run_id"] for row in done["removed"]] == [second["run_id"]]
        assert "driver lock" in _reasons(done)[first["run_id"]]
        assert (run_dir / "manifest.json").is_file()
        assert not state_entries(repo, "held")[first["run_id"]].get("pruned")
    code, done = json_cli(repo, "prune", "--keep", "0", "--include-evidence")
    assert code == 0 and [row["run_id"] for row in done["removed"]] == [first["run_id"]]
    assert not run_dir.exists()
    assert state_entries(repo, "held")[first["run_id"]]["pruned"] is True


@pytest.mark.slow
def test_prune_records_list_each_removed_run_once(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "echo some output"})
    runs = [repo.start_json("--task", "once")[1] for _ in range(3)]
    sizes = {run["run_id"]: _bytes(repo.root / run["artifact_root"]) for run in runs}
    code, done = json_cli(repo, "prune", "--keep", "1")
    assert code == 0
    removed = [row["run_id"] for row in done["removed"]]
    assert sorted(removed) == sorted(run["run_id"] for run in runs[:2])  # each once
    assert {row["run_id"]: row["bytes"] for row in done["removed"]} == {
        run_id: sizes[run_id] for run_id in removed
    }
    assert done["bytes_freed"] == sum(sizes[run_id] for run_id in removed)
    listed = repo.cli("prune", "--keep", "0", "--include-evidence").stdout.splitlines()
    assert sum(runs[2]["run_id"] in line for line in listed) == 1


@pytest.mark.slow
def test_prune_records_keep_a_child_whose_parent_is_in_another_task(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    parent = repo.start_json("--task", "elders")[1]
    child = repo.start_json("--task", "young", "--parent-run", parent["run_id"])[1]
    code, done = json_cli(repo, "prune", "--task", "young", "--keep", "0")
    assert code == 0 and done["removed"] == []
    assert _reasons(done)[child["run_id"]] == f"child of kept run {parent['run_id']}"
    assert (repo.root / child["manifest"]).is_file()
    code, done = json_cli(repo, "prune", "--keep", "0")  # both tasks: the family goes together
    assert code == 0
    assert {row["run_id"] for row in done["removed"]} == {parent["run_id"], child["run_id"]}


def test_prune_records_keep_children_of_a_parent_whose_manifest_is_unreadable(
    repo: Repo,
) -> None:
    _family_config(repo)
    parent = repo.start_json("--task", "fam")[1]
    child_id = repo.manifest(parent)["child_runs"][0]["run_id"]
    (repo.root / parent["manifest"]).write_text("{torn")
    result = repo.cli("prune", "--keep", "0", "--include-evidence", "--format", "json")
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout)
    assert done["removed"] == []
    assert _reasons(done)[child_id] == f"child of kept run {parent['run_id']}"
    assert "no readable manifest" in result.stderr
    assert {d.name for d in run_dirs(repo, "fam")} == {parent["run_id"], child_id}
