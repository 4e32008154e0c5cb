"""``runner.ndjson``: what the event log writes, its reader finds."""

from __future__ import annotations

from pathlib import Path

from codex_orchestrator.records.events import EventLog, read_events


def test_the_reader_finds_the_events_the_log_wrote_and_skips_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "runner.ndjson"
    log = EventLog(path)
    log.emit("stage_handle", index=1, handle={"kind": "local", "pid": 10})
    log.emit("stage_started", index=2, stage_id="two", attempt=1)
    log.emit("stage_handle", index=2, handle={"kind": "local", "pid": 20})
    log.close()
    with path.open("ab") as torn:  # a driver killed mid-write
        torn.write(b'{"timestamp":"2026-01-01T00:00:00.000Z","event":"stage_handle","ind')

    events = read_events(path, "stage_handle")

    assert [(event["index"], event["handle"]["pid"]) for event in events] == [(1, 10), (2, 20)]
    assert read_events(tmp_path / "missing.ndjson", "stage_handle") == []
