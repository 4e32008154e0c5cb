"""The stage cache end to end: the real CLI, real files, real stage processes (SPEC §16).

Every cached stage appends a line to ``ran.log`` outside the root (see `helpers.cached_repo`),
so each test can see which stages really started a process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.persistence.prune import CACHE_CITED
from conftest import GIT_IDENTITY, Repo, assert_one_line_error
from evidence.helpers import write_index
from helpers.cached_repo import Cached, reasons
from helpers.processes import wait_for

pytestmark = pytest.mark.slow


def test_a_hit_spawns_nothing_replays_the_logs_and_restores_outputs(cached: Cached) -> None:
    cached.repo.pipeline(
        cached.stage(
            "build",
            "mkdir -p dist && cp src/app.py dist/app.txt",
            cache={"inputs": ["src/**"], "outputs": ["dist/app.txt"]},
        ),
        {"id": "plain", "command": f"echo plain >> {cached.ran_log}"},
    )
    first = cached.start()
    assert cached.ran() == ["build", "plain"]
    entry = first["commands"][0]
    assert entry["cache"]["status"] == "miss"
    assert entry["cache"]["reason"] == "no entry"
    assert entry["cache"]["store"] == "stored"
    assert "cache" not in first["commands"][1]  # a stage without cache is as it always was

    (cached.root / "dist" / "app.txt").unlink()
    second = cached.start()
    assert cached.ran() == ["plain"]  # the cached stage started no process
    hit = second["commands"][0]
    assert hit["status"] == "succeeded" and hit["exit_code"] == 0
    assert hit.get("pid") is None and hit.get("pgid") is None and hit["handle"] is None
    assert hit["summary"] == entry["summary"]
    assert hit["cache"] == {
        "status": "hit",
        "key": entry["cache"]["key"],
        "reason": None,
        "from_run": first["run_id"],
        "from_task": "default",
        "saved_seconds": pytest.approx(entry["duration_seconds"], abs=0.001),
    }
    for field in ("log_path", "stderr_log_path"):
        original = (cached.root / entry[field]).read_bytes()
        assert (cached.root / hit[field]).read_bytes() == original
        assert hit[field] != entry[field]
    assert (cached.root / "dist" / "app.txt").read_text() == "print('app')\n"


def test_each_change_the_key_covers_is_a_miss_naming_it(cached: Cached) -> None:
    def pipeline(command_extra: str = "", env: dict[str, str] | None = None) -> None:
        cache = {"inputs": ["src/**"], "env": ["FLAVOUR"]}
        cached.repo.pipeline(cached.stage("test", command_extra, cache=cache, env=env or {}))

    pipeline()
    cached.start()
    assert cached.ran() == ["test"]
    steps: list[tuple[Any, str]] = [
        (lambda: (cached.root / "src" / "app.py").write_text("changed\n"), "src/app.py modified"),
        (lambda: (cached.root / "src" / "new.py").write_text("new\n"), "src/new.py added"),
        (lambda: (cached.root / "src" / "app.py").unlink(), "src/app.py deleted"),
        (lambda: pipeline("true"), "command changed"),
        (lambda: pipeline("true", {"A": "1"}), "env changed"),
    ]
    for change, reason in steps:
        change()
        assert reasons(cached.start())["test"] == ("miss", reason)
        assert cached.ran() == ["test"]
        assert reasons(cached.start())["test"] == ("hit", None)
        assert cached.ran() == []
    environment = {"FLAVOUR": "mint"}
    assert reasons(cached.start(env=environment))["test"] == ("miss", "env FLAVOUR changed")
    assert reasons(cached.start(env={"FLAVOUR": ""}))["test"] == ("miss", "env FLAVOUR changed")
    assert reasons(cached.start(env=environment))["test"] == ("hit", None)


def test_an_upstream_change_invalidates_the_stages_that_need_it_only(cached: Cached) -> None:
    (cached.root / "docs").mkdir()
    (cached.root / "docs" / "a.md").write_text("a\n")
    cached.repo.pipeline(
        cached.stage("build", needs=[]),
        cached.stage("test", needs=["build"], cache={"inputs": ["docs/**"]}),
        cached.stage("docs", needs=[], cache={"inputs": ["docs/**"]}),
    )
    cached.start()
    assert sorted(cached.ran()) == ["build", "docs", "test"]
    (cached.root / "src" / "app.py").write_text("changed\n")
    manifest = cached.start()
    assert sorted(cached.ran()) == ["build", "test"]
    assert reasons(manifest) == {
        "build": ("miss", "src/app.py modified"),
        "test": ("miss", "needs build changed"),
        "docs": ("hit", None),
    }


def test_failing_timed_out_and_allowed_failures_are_never_stored(cached: Cached) -> None:
    cached.repo.pipeline(
        cached.stage("flaky", f"test -e {cached.root.parent / 'fixed'}", needs=[]),
        cached.stage("slow", "sleep 30", timeoutSeconds=0.5, needs=[]),
        cached.stage("allowed", "exit 3", allowFailure=True, needs=[]),
    )
    code, _ = cached.repo.start_json()
    assert code != 0
    assert sorted(cached.ran()) == ["allowed", "flaky", "slow"]
    (cached.root.parent / "fixed").write_text("")
    code, document = cached.repo.start_json()
    manifest = cached.repo.manifest(document)
    assert sorted(cached.ran()) == ["allowed", "flaky", "slow"]  # nothing failing was a hit
    assert reasons(manifest) == {
        "flaky": ("miss", "no entry"),
        "slow": ("miss", "no entry"),
        "allowed": ("miss", "no entry"),
    }
    assert reasons(cached.repo.manifest(cached.repo.start_json()[1]))["flaky"] == ("hit", None)
    # fix, then break again (the fix is outside the inputs): still a hit, as the cache page
    # says; an input edit that breaks the stage is a miss, and a failure is never stored
    (cached.root / "src" / "app.py").write_text("broken\n")
    (cached.root.parent / "fixed").unlink()
    for _ in range(2):
        code, document = cached.repo.start_json()
        assert code != 0 and "flaky" in cached.ran()


def test_no_cache_runs_everything_and_still_stores(cached: Cached) -> None:
    cached.repo.pipeline(cached.stage("test"))
    manifest = cached.start("--no-cache")
    assert cached.ran() == ["test"]
    assert manifest["commands"][0]["cache"]["reason"] == "--no-cache"
    assert manifest["commands"][0]["cache"]["store"] == "stored"
    assert reasons(cached.start())["test"] == ("hit", None)
    assert cached.ran() == []
    cached.start("--no-cache")
    assert cached.ran() == ["test"]


def test_the_cache_setting_false_runs_every_stage(cached: Cached) -> None:
    cached.repo.pipeline(cached.stage("test"), settings={"cache": False})
    for _ in range(2):
        manifest = cached.start()
        assert cached.ran() == ["test"]
        assert manifest["commands"][0]["cache"]["status"] == "off"
    assert not (cached.root / ".runs" / ".cache").exists()


def test_a_cache_that_cannot_be_written_never_fails_the_run(cached: Cached) -> None:
    (cached.root / "not-a-dir").write_text("")
    cached.repo.pipeline(cached.stage("test"), settings={"cache_dir": "not-a-dir/cache"})
    result = cached.repo.cli("start", "--format", "json")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "stage cache" in warnings[0], result.stderr
    manifest = cached.repo.manifest(json.loads(result.stdout))
    field = manifest["commands"][0]["cache"]
    assert field["store"] == "not stored" and field["store_reason"]
    cached.start()
    assert cached.ran() == ["test", "test"]


def test_a_damaged_entry_is_a_miss_with_a_warning_and_the_stage_runs(cached: Cached) -> None:
    cached.repo.pipeline(cached.stage("test"))
    cached.start()
    entries = cached.root / ".runs" / ".cache" / "entries"
    (stdout,) = entries.glob("*/*/stdout.log")
    stdout.write_bytes(b"forged\n")
    result = cached.repo.cli("start", "--format", "json")
    assert result.returncode == 0
    assert "is damaged" in result.stderr
    manifest = cached.repo.manifest(json.loads(result.stdout))
    status, reason = reasons(manifest)["test"]
    assert status == "miss" and reason is not None and reason.startswith("entry damaged")
    assert cached.ran() == ["test", "test"]
    assert reasons(cached.start())["test"] == ("hit", None)  # the next store repaired it


def test_a_link_out_of_the_root_and_a_fifo_among_the_inputs_are_never_read(
    cached: Cached, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("one\n")
    os.symlink(secret, cached.root / "src" / "link.txt")
    os.mkfifo(cached.root / "src" / "pipe")  # opening it would block: it is never opened
    cached.repo.pipeline(cached.stage("test"))
    cached.start()
    secret.write_text("two\n")  # the link's target is outside the root: not an input
    assert reasons(cached.start())["test"] == ("hit", None)


def _tree_state(directory: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(path.relative_to(directory)), path.lstat().st_mtime_ns, path.lstat().st_size)
        for path in directory.rglob("*")
    )


def test_plan_shows_hit_or_miss_and_why_and_writes_nothing(cached: Cached) -> None:
    cached.repo.pipeline(
        cached.stage("build", needs=[]),
        cached.stage("test", needs=["build"], cache={"inputs": ["docs/**"]}),
        {"id": "plain", "command": "true", "needs": []},
    )
    (cached.root / "docs").mkdir()
    first = json.loads(cached.repo.cli("plan", "--format", "json").stdout)
    assert [stage.get("cache", {}).get("reason") for stage in first["stages"]] == [
        "no entry",
        "no entry",
        None,
    ]
    assert not (cached.root / ".runs").exists()  # nothing written, not even the cache dir
    run = cached.start()
    cached.ran()
    state = _tree_state(cached.root / ".runs")
    plan = json.loads(cached.repo.cli("plan", "--format", "json").stdout)
    expected = [
        {
            **entry["cache"],
            "status": "hit",
            "reason": None,
            "from_run": run["run_id"],
            "from_task": "default",
            "saved_seconds": pytest.approx(entry["duration_seconds"], abs=0.001),
        }
        for entry in run["commands"][:2]
    ]
    for field in expected:
        del field["store"], field["store_reason"]
    assert [stage.get("cache") for stage in plan["stages"]] == [*expected, None]
    (cached.root / "src" / "app.py").write_text("changed\n")
    text = cached.repo.cli("plan").stdout
    assert "build: " in text and "[cache miss: src/app.py modified]" in text, text
    assert "(needs build)" in text and "[cache miss: needs build changed]" in text, text
    assert _tree_state(cached.root / ".runs") == state
    assert cached.ran() == []


def test_status_report_live_view_and_mcp_show_cached_stages_and_time_saved(
    cached: Cached,
) -> None:
    from codex_orchestrator.mcp.server import run_state
    from codex_orchestrator.view.rows import headline, stage_rows

    cached.repo.pipeline(cached.stage("build", "sleep 0.3"))
    first = cached.start()
    second = cached.start()
    run_id = second["run_id"]
    text = cached.repo.cli("status", run_id).stdout
    assert f"[cached from run {first['run_id']} (saved 0." in text, text
    assert "cache: 1 stage from the cache, 0." in text, text
    status = json.loads(cached.repo.cli("status", run_id, "--format", "json").stdout)
    saved = first["commands"][0]["duration_seconds"]
    assert status["cached_stages"] == 1
    assert status["saved_seconds"] == pytest.approx(saved, abs=0.001)
    state = run_state(status)
    assert (state["cached_stages"], state["stages"][0]["cache_status"]) == (1, "hit")
    assert state["stages"][0]["cached_from_run"] == first["run_id"]
    assert state["stages"][0]["saved_seconds"] == pytest.approx(saved, abs=0.001)
    run_dir = cached.root / second["artifact_root"]
    (row,) = stage_rows(second, run_dir)
    assert row.detail.startswith("cached, saved 0.")
    assert "1 stage from the cache" in headline(second)
    report = json.loads(cached.repo.cli("report", run_id, "--format", "json").stdout)
    assert f"cached from run {first['run_id']}" in (cached.root / report["report"]).read_text()


def test_prune_keeps_the_runs_the_cache_cites_and_evicts_to_the_budget(cached: Cached) -> None:
    cached.repo.pipeline(cached.stage("test"))
    ran = cached.start()
    served = cached.start()
    assert served["commands"][0]["cache"]["from_run"] == ran["run_id"]
    result = cached.repo.cli("prune", "--keep", "0", "--format", "json")
    document = json.loads(result.stdout)
    assert [run["run_id"] for run in document["removed"]] == [served["run_id"]]
    assert {"run_id": ran["run_id"], "reason": CACHE_CITED} in document["kept"]
    assert document["cache"] == {"evicted": [], "bytes_freed": 0}
    cached.repo.pipeline(cached.stage("test"), settings={"cache_max_bytes": 1})
    document = json.loads(cached.repo.cli("prune", "--keep", "0", "--format", "json").stdout)
    assert [run["run_id"] for run in document["removed"]] == [ran["run_id"]]
    (evicted,) = document["cache"]["evicted"]
    assert evicted["from_run"] == ran["run_id"] and document["cache"]["bytes_freed"] > 0
    assert reasons(cached.start())["test"] == ("miss", "no entry")


def test_a_run_of_hits_is_evidence_through_the_run_that_really_ran(cached: Cached) -> None:
    task = "0100-cache"
    write_index(cached.root, {"id": "0100", "slug": "cache", "title": "Cache", "status": "open"})
    checklist = cached.root / "tasks" / f"tasks-{task}.md"
    checklist.write_text("# Cache\n\n- [ ] Run tests\n- [ ] Run lint\n")
    cached.repo.pipeline(cached.stage("test"), tasks={"mirrors": ["tasks/tasks-{task}.md"]})
    ran = cached.start("--task", task)
    served = cached.start("--task", task)
    assert reasons(served)["test"] == ("hit", None)
    marked = cached.repo.cli("tasks", "mark", task, "run tests", "--run", served["run_id"])
    assert marked.returncode == 0, marked.stderr
    check = cached.repo.cli("tasks", "check", task, "--format", "json")
    assert check.returncode == 0, check.stdout
    # the run that really ran the stage is gone (prune would never do it): the chain breaks
    shutil.rmtree(cached.root / ran["artifact_root"])
    refused = cached.repo.cli("tasks", "mark", task, "run lint", "--run", served["run_id"])
    line = assert_one_line_error(refused, refused.returncode, "served from the stage cache")
    assert f"run {ran['run_id']}, which ran it, no longer exists" in line
    check = cached.repo.cli("tasks", "check", task, "--format", "json")
    assert check.returncode != 0
    assert "evidence-cache-chain" in check.stdout


def test_a_hit_from_another_worktrees_run_restores_there_and_is_evidence_through_it(
    cached: Cached, tmp_path: Path
) -> None:
    """Worktrees sharing a cache dir: a hit stored by the second worktree's run is served in the
    first (outputs restored), and its chain leads to the run in the second worktree."""
    task, shared = "0100-cache", tmp_path / "shared-cache"
    settings = {"cache_dir": str(shared)}
    build = cached.stage(
        "build",
        "mkdir -p dist && cp src/app.py dist/app.txt",
        cache={"inputs": ["src/**"], "outputs": ["dist/app.txt"]},
    )
    cached.repo.pipeline(build, settings=settings, tasks={"mirrors": ["tasks/tasks-{task}.md"]})
    (cached.root / ".gitignore").write_text(".runs/\nout/\ndist/\n")
    for command in (["add", "-A"], ["commit", "-qm", "src"]):
        subprocess.run(["git", *GIT_IDENTITY, *command], cwd=cached.root, check=True)
    second = Path(os.path.realpath(tmp_path / "second"))
    subprocess.run(["git", "worktree", "add", "-q", str(second)], cwd=cached.root, check=True)
    other = Cached(Repo(second))  # its runs log is beside the first one's
    ran = other.start("--task", task)
    ran_manifest = str(second / ran["artifact_root"] / "manifest.json")
    served = cached.start("--task", task)
    assert cached.ran() == ["build"]  # the second worktree's run, only
    assert served["commands"][0]["cache"]["from_run"] == ran["run_id"]
    assert (cached.root / "dist" / "app.txt").read_text() == "print('app')\n"
    write_index(cached.root, {"id": "0100", "slug": "cache", "title": "Cache", "status": "open"})
    checklist = cached.root / "tasks" / f"tasks-{task}.md"
    checklist.write_text("# Cache\n\n- [ ] Build\n- [ ] Build again\n")

    marked = cached.repo.cli("tasks", "mark", task, "build", "--run", served["run_id"])
    assert marked.returncode == 0, marked.stderr
    assert f"stage build: ran in run {ran['run_id']}, {ran_manifest}" in marked.stdout
    check = cached.repo.cli("tasks", "check", task, "--format", "json")
    assert check.returncode == 0, check.stdout
    (note,) = json.loads(check.stdout)["tasks"][0]["notes"]
    assert note["kind"] == "evidence-from-worktree" and ran_manifest in note["message"]
    # prune where it ran keeps the run that the shared cache's entry cites
    document = json.loads(other.repo.cli("prune", "--keep", "0", "--format", "json").stdout)
    assert {"run_id": ran["run_id"], "reason": CACHE_CITED} in document["kept"]

    # its entry evicted, the run goes: the chain is broken, and says where it was looked for
    other.repo.pipeline(build, settings={**settings, "cache_max_bytes": 1})
    document = json.loads(other.repo.cli("prune", "--keep", "0", "--format", "json").stdout)
    assert [run["run_id"] for run in document["removed"]] == [ran["run_id"]]
    gone = f"run {ran['run_id']}, which ran it, no longer exists (looked in .runs and in"
    check = cached.repo.cli("tasks", "check", task, "--format", "json")
    assert check.returncode == 1
    (problem,) = json.loads(check.stdout)["tasks"][0]["problems"]
    assert problem["kind"] == "evidence-cache-chain"
    assert f"{gone} the other worktrees' {second / '.runs'})" in problem["message"]
    # the worktree removed, git lists no other
    remove = ["git", "worktree", "remove", "--force", str(second)]
    subprocess.run(remove, cwd=cached.root, check=True)
    refused = cached.repo.cli("tasks", "mark", task, "build again", "--run", served["run_id"])
    line = assert_one_line_error(refused, refused.returncode, "served from the stage cache")
    assert f"{gone} no other worktree (git lists none))" in line


def test_ten_concurrent_runs_on_one_key_leave_one_entry_and_all_succeed(
    cached: Cached, tmp_path: Path
) -> None:
    runs = 10
    # A gate: each stage waits for a line from this FIFO, which the test writes once all ten
    # have started: all ten look the key up before any stores it, then all store it at once.
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    cached.repo.pipeline(cached.stage("test", f"read go < {gate}", timeoutSeconds=60))
    starts = [cached.repo.spawn("start", "--format", "json") for _ in range(runs)]

    def arrived() -> bool:
        return cached.ran_log.exists() and len(cached.ran_log.read_text().split()) == runs

    wait_for(arrived, timeout=60, what="all ten stages to start")
    writer = os.open(gate, os.O_RDWR)  # (never blocks; kept open until every line is read)
    try:
        os.write(writer, b"go\n" * runs)
        documents = []
        for process in starts:
            stdout, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr
            documents.append(json.loads(stdout))
    finally:
        os.close(writer)
    fields = [cached.repo.manifest(d)["commands"][0]["cache"] for d in documents]
    assert [field["reason"] for field in fields] == ["no entry"] * runs, fields
    assert sorted(field["store"] for field in fields) == ["exists"] * (runs - 1) + ["stored"]
    assert len(cached.ran()) == runs
    entries = cached.root / ".runs" / ".cache" / "entries"
    assert len(list(entries.glob("*/*/entry.json"))) == 1
    assert not list((cached.root / ".runs" / ".cache" / "tmp").iterdir())
    assert reasons(cached.start())["test"] == ("hit", None)
    assert cached.ran() == []


def test_resume_looks_cached_stages_up_and_no_cache_runs_them(cached: Cached) -> None:
    marker = cached.root / "gate" / "ok"
    marker.parent.mkdir()
    marker.write_text("")
    cached.repo.pipeline(
        {"id": "gate", "command": "test -e gate/ok", "needs": [], "cache": {"inputs": ["gate"]}},
        cached.stage("after", needs=["gate"]),
    )
    cached.start()
    assert cached.ran() == ["after"]
    for flag, ran, status in (([], [], "hit"), (["--no-cache"], ["after"], "miss")):
        marker.unlink()
        code, document = cached.repo.start_json()
        assert code != 0 and cached.ran() == []
        marker.write_text("")
        result = cached.repo.cli("resume", document["run_id"], *flag, "--format", "json")
        assert result.returncode == 0, result.stderr
        resumed = cached.repo.manifest(json.loads(result.stdout))
        assert cached.ran() == ran
        assert reasons(resumed)["after"][0] == status


def test_a_stage_that_runs_between_hits_is_seen_by_the_next_lookup(cached: Cached) -> None:
    """Consecutive hits share one look at the tree; a stage that runs in between ends it."""
    cached.repo.pipeline(
        cached.stage("first", cache={"inputs": ["src/app.py"]}),
        {"id": "writer", "command": "date +%s%N > src/generated.txt"},
        cached.stage("reader"),
    )
    cached.start()
    assert cached.ran() == ["first", "reader"]
    manifest = cached.start()
    assert reasons(manifest) == {
        "first": ("hit", None),
        "reader": ("miss", "src/generated.txt modified"),
    }
    assert cached.ran() == ["reader"]
