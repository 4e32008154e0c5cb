"""Long pipelines: stage transitions do not rewrite the manifest each time, yet nothing is lost."""

from __future__ import annotations

import json

import pytest

from conftest import Repo

STAGES = 300


@pytest.mark.slow
def test_transitions_are_in_the_event_log_and_manifest_writes_stay_few(repo: Repo) -> None:
    repo.pipeline(*({"id": f"s{index:04d}", "command": "true"} for index in range(STAGES)))
    code, doc = repo.start_json()
    assert code == 0
    manifest = repo.manifest(doc)
    assert [entry["status"] for entry in manifest["commands"]] == ["succeeded"] * STAGES
    assert all(entry["handle"]["kind"] == "local" for entry in manifest["commands"])
    events = [
        json.loads(line)
        for line in (repo.root / doc["artifact_root"] / "runner.ndjson").read_text().splitlines()
    ]
    kinds = [event["event"] for event in events]
    assert kinds.count("stage_started") == kinds.count("stage_finished") == STAGES
    assert kinds.count("stage_handle") == STAGES
    [stats] = [event for event in events if event["event"] == "heartbeat_stats"]
    # every transition written would be 2 writes a stage; the write budget keeps it far lower
    assert stats["manifest_writes_total"] < STAGES
