"""`RunLayout`: the writers of a run directory write only the paths it names, and the readers
find there what the writers wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_orchestrator.engine.lifecycle import create_run, execute
from codex_orchestrator.engine.recovery import recorded_handles
from codex_orchestrator.records.manifest import load_manifest
from codex_orchestrator.records.run_layout import RunLayout, log_stem, stage_log_name
from codex_orchestrator.records.stage_logs import STREAMS, StageFiles, stage_sources
from conftest import Repo
from helpers.fake_executor import FakeExecutor, fake_context


@pytest.mark.parametrize(("count", "stem"), [(3, "07-lint"), (99, "07-lint"), (100, "007-lint")])
def test_log_names_read_back_as_the_attempt_and_stream_written(count: int, stem: str) -> None:
    layout = RunLayout(Path("/runs/default/cli/run-1"))
    assert log_stem(7, "lint", count) == stem
    for attempt in (1, 2, 12):
        logs = layout.stage_logs(7, "lint", count, attempt)
        assert logs.stdout.parent == logs.stderr.parent == layout.commands_dir
        for stream, path in zip(STREAMS, logs, strict=True):
            assert stage_log_name(path.name, stem) == (attempt, stream)
            assert stage_log_name(path.name, stem + "x") is None  # another stage's
    assert layout.error_file(7, "lint", count).name == f"{stem}.json"


@pytest.mark.slow
def test_writers_and_readers_of_a_run_directory_agree(repo: Repo) -> None:
    repo.pipeline(
        {"id": "flaky", "command": "test", "retries": 2, "retryDelaySeconds": 0},
        {"id": "broken", "command": "check; exit 4"},
    )
    executor = FakeExecutor(exits={"flaky": [3, 0]})
    ctx, config = fake_context(repo, executor)
    pipeline = config.resolve_pipeline(None)
    result = execute(ctx, create_run(ctx, pipeline, None, None), pipeline)
    layout = RunLayout(result.run_dir)
    manifest = load_manifest(layout.manifest)
    flaky, broken = manifest["commands"]

    named = {
        layout.manifest,
        layout.resume_token,
        layout.events,
        layout.run_summary,
        layout.driver_lock,
        layout.cancel_lock,  # the final records close cancel requests under it
        *layout.stage_logs(1, "flaky", 2, 1),
        *layout.stage_logs(1, "flaky", 2, 2),
        *layout.stage_logs(2, "broken", 2, 1),
        layout.error_file(2, "broken", 2),
    }
    written = {path for path in result.run_dir.rglob("*") if path.is_file()}
    assert named <= written <= named | {layout.heartbeat}  # a quick run may end before a beat

    files = StageFiles.listing(layout.commands_dir)
    found = [
        source.path for source in stage_sources(layout.run_dir, manifest, flaky, STREAMS, files)
    ]
    assert found == [*layout.stage_logs(1, "flaky", 2, 1), *layout.stage_logs(1, "flaky", 2, 2)]
    assert flaky["log_path"] == ctx.workspace.display(layout.stage_logs(1, "flaky", 2, 2).stdout)
    assert broken["error_file"] == ctx.workspace.display(layout.error_file(2, "broken", 2))
    assert StageFiles.listing(layout.errors_dir).of(2, "broken") == ["02-broken.json"]
    assert [
        handle["ticket"] for handle in recorded_handles(layout.run_dir, manifest["commands"])
    ] == [1, 2]
    assert manifest["log_path"] == ctx.workspace.display(layout.events)
