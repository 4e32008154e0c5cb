"""Recovery and stage recording with an in-process executor: resume, settling a dead run, and
what a retried stage leaves, on real run directories but without spawning a stage."""

from __future__ import annotations

import json

import pytest

from codex_orchestrator.engine.lifecycle import create_run, execute
from codex_orchestrator.engine.recovery import Recovery, prepare_resume, settle_dead_run
from codex_orchestrator.records.driver import DriverLock
from codex_orchestrator.records.events import EventLog
from codex_orchestrator.records.manifest import ManifestStore, load_manifest
from codex_orchestrator.records.run_layout import RunLayout
from conftest import Repo
from helpers.fake_executor import FakeExecutor, fake_context

pytestmark = pytest.mark.slow  # each test loads a config and writes a run's final records


def dead_run(repo: Repo, executor: FakeExecutor) -> ManifestStore:
    """A run of ``one``, ``two`` (needs one), ``three`` whose driver died while ``two`` ran:
    ``one`` failed, ``two`` running with a handle (its newest only in ``runner.ndjson``)."""
    repo.pipeline(
        {"id": "one", "command": "build"},
        {"id": "two", "command": "check"},
        {"id": "three", "command": "finish"},
    )
    ctx, config = fake_context(repo, executor)
    store = create_run(ctx, config.resolve_pipeline(None), None, None)
    store.begin_command(1, 1, "one.out", "one.err")
    store.end_stage(1, "succeeded", "ran one", {"exit_code": 0})
    store.begin_command(2, 1, "two.out", "two.err")
    store.record_handle(2, {"kind": "fake", "host": "fake-host", "pid": 1})
    store.persist()
    events = EventLog(RunLayout(store.run_dir).events)
    events.emit("stage_handle", index=2, handle={"kind": "fake", "host": "fake-host", "pid": 2})
    events.close()
    assert store.driver is not None
    store.driver.release()  # the driver is gone: its lock is free
    return store


def test_resume_reaps_the_newest_handle_and_queues_what_did_not_end(repo: Repo) -> None:
    executor = FakeExecutor()
    store = dead_run(repo, executor)
    ctx, config = fake_context(repo, executor)
    store = ManifestStore(store.run_dir, load_manifest(store.path))

    prepare_resume(ctx, store, config.resolve_pipeline(None), "tester", "fixing")

    assert executor.reaped == [{"kind": "fake", "host": "fake-host", "pid": 2}]
    manifest = json.loads(store.path.read_text())
    assert [entry["status"] for entry in manifest["commands"]] == [
        "succeeded",
        "pending",
        "pending",
    ]
    assert manifest["status"] == "queued" and manifest["completed_at"] is None
    [event] = manifest["resume_events"]
    assert (event["actor"], event["reason"], event["outcome"]) == (
        "tester",
        "fixing",
        "in_progress",
    )

    result = execute(ctx, store, config.resolve_pipeline(None))
    assert result.status == "succeeded" and executor.ran == ["two", "three"]


def test_settling_a_dead_run_reaps_its_stages_and_writes_its_end(repo: Repo) -> None:
    executor = FakeExecutor()
    store = dead_run(repo, executor)
    ctx, _ = fake_context(repo, executor)
    recovery = Recovery(ctx.workspace, ctx.settings, ctx.task_id, executor)

    assert settle_dead_run(recovery, store.run_dir) == "failed"

    assert executor.reaped == [{"kind": "fake", "host": "fake-host", "pid": 2}]
    manifest = load_manifest(store.path)
    assert (manifest["status"], manifest["status_detail"]) == ("failed", "driver-lost")
    assert [entry["status"] for entry in manifest["commands"]] == [
        "succeeded",
        "failed",
        "pending",
    ]
    assert RunLayout(store.run_dir).run_summary.is_file()
    assert settle_dead_run(recovery, store.run_dir) == "failed"  # an ended run stays as it is
    assert len(executor.reaped) == 1


def test_a_run_someone_drives_is_not_settled(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    executor = FakeExecutor()
    store = dead_run(repo, executor)
    ctx, _ = fake_context(repo, executor)
    before = store.path.read_bytes()
    driver = DriverLock(store.run_dir)
    assert driver.acquire()  # a live driver (its own open file: flock excludes it)
    try:
        recovery = Recovery(ctx.workspace, ctx.settings, ctx.task_id, executor)
        assert settle_dead_run(recovery, store.run_dir) is None
    finally:
        driver.release()
    assert store.path.read_bytes() == before and executor.reaped == []
    assert "still driven by another process" in capsys.readouterr().err


def test_a_stage_that_succeeds_on_a_retry_lets_the_next_stages_run(repo: Repo) -> None:
    """A sequential pipeline went on after a retried stage succeeded (it used to end the run
    as succeeded with the later stages still pending)."""
    repo.pipeline(
        {"id": "flaky", "command": "test", "retries": 2, "retryDelaySeconds": 0},
        {"id": "after", "command": "report"},
    )
    executor = FakeExecutor(exits={"flaky": [3, 0]})
    ctx, config = fake_context(repo, executor)
    pipeline = config.resolve_pipeline(None)

    result = execute(ctx, create_run(ctx, pipeline, None, None), pipeline)

    assert result.status == "succeeded" and executor.ran == ["flaky", "flaky", "after"]
    flaky, after = load_manifest(RunLayout(result.run_dir).manifest)["commands"]
    assert flaky["summary"] == "succeeded on attempt 2 of 3; ran flaky"
    assert [item["exit_code"] for item in flaky["attempt_history"]] == [3, 0]
    assert after["status"] == "succeeded"
    layout = RunLayout(result.run_dir)
    assert layout.stage_logs(1, "flaky", 2, 2).stdout.read_bytes() == b"ran flaky\n"
