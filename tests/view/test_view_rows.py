"""What the view shows: neutralised text, parallel stages, retries, small terminals."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from codex_orchestrator.util import terminal_text
from codex_orchestrator.util.terminal_text import (
    StreamNeutraliser,
    escape_json_controls,
    last_line,
    neutralise,
)
from codex_orchestrator.view.rows import fit_rows, headline, running_line, stage_rows

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@given(st.text())
def test_neutralised_text_holds_no_control_character(text: str) -> None:
    assert not UNSAFE.search(neutralise(text))
    assert "\n" not in neutralise(text, keep_newlines=False)


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_neutralised_stream_holds_no_control_byte(chunks: list[bytes]) -> None:
    stream = StreamNeutraliser()
    out = b"".join(stream.feed(chunk) for chunk in chunks).decode("utf-8")
    assert not UNSAFE.search(out)


def test_no_character_the_neutraliser_changes_takes_its_fast_path() -> None:
    # `neutralise` skips its regular expressions for text whose lines are all printable; that is
    # only sound if no character of its unsafe set is printable (on this Python's Unicode tables)
    unsafe = re.compile(terminal_text._UNSAFE)
    every = "".join(chr(code) for code in range(0x110000))
    assert len(unsafe.findall(every)) == 97  # C0 but newline, DEL, C1, 33 format characters
    assert unsafe.search("".join(char for char in every if char.isprintable())) is None
    assert escape_json_controls("\u202e\x7f") == "\\u202e\\u007f"


def test_escape_sequences_are_dropped_and_controls_shown() -> None:
    assert neutralise("\x1b[2J\x1b[Hhello \x1b[31mred\x1b[0m") == "hello red"
    assert neutralise("\x1b]0;title\x07after") == "after"
    assert neutralise("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\") == "link"
    assert neutralise("ring\x07") == "ring␇"
    assert neutralise("a\u202eb") == "a\ufffdb"


def test_last_line_follows_carriage_returns_and_skips_blank_lines() -> None:
    assert last_line(b"one\ntwo\n\n") == "two"
    assert last_line(b"progress 10%\rprogress 90%\r") == "progress 90%"
    assert last_line(b"\xff\xfe bad bytes\n") == "\ufffd\ufffd bad bytes"
    assert last_line(b"") == ""


def _entry(index: int, stage_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"index": index, "id": stage_id, "status": status, **extra}


def test_parallel_running_stages_show_their_own_last_lines(tmp_path: Path) -> None:
    commands = tmp_path / "commands"
    commands.mkdir()
    (commands / "01-a.stdout.log").write_bytes(b"a-1\na-2\n")
    (commands / "02-b.stdout.log").write_bytes(b"b-1\n")
    (commands / "02-b.stderr.log").write_bytes(b"b-warning\n")
    os.utime(commands / "02-b.stdout.log", (1, 1))
    manifest = {
        "run_id": "r",
        "pipeline_id": "p",
        "status": "in_progress",
        "started_at": "2026-01-01T00:00:00.000Z",
        "commands": [
            _entry(
                1,
                "a",
                "running",
                log_path=".runs/t/cli/r/commands/01-a.stdout.log",
                started_at="2026-01-01T00:00:00.000Z",
            ),
            _entry(
                2,
                "b",
                "running",
                log_path="x/02-b.stdout.log",
                stderr_log_path="x/02-b.stderr.log",
                attempts=2,
                started_at="2026-01-01T00:00:01.000Z",
            ),
            _entry(3, "c", "pending"),
        ],
    }
    rows = stage_rows(manifest, tmp_path, now=1767225610.0)  # 10 s after the run started
    assert [(row.stage_id, row.mark) for row in rows] == [("a", "▶"), ("b", "▶"), ("c", "·")]
    assert rows[0].detail == "a-2" and rows[0].clock == "10s"
    assert rows[1].detail == "attempt 2: b-warning" and rows[1].clock == "9s"
    assert "in_progress" in headline(manifest, now=1767225610.0)


def test_tampered_manifest_cannot_point_the_view_outside_the_run(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do-not-show\n")
    run_dir = tmp_path / "run"
    (run_dir / "commands").mkdir(parents=True)
    (run_dir / "commands" / "evil.log").symlink_to(secret)
    for path in ("../../secret.txt", str(secret), "commands/evil.log"):
        assert running_line(run_dir, {"log_path": path}) == ""


def test_odd_entries_do_not_break_the_rows(tmp_path: Path) -> None:
    manifest = {
        "status": "failed",
        "commands": [
            "not-an-entry",
            {"id": "x\x1b[2Jy", "status": "running", "started_at": 5, "attempts": "2"},
            {"id": "z", "status": "weird", "duration_seconds": True},
        ],
    }
    rows = stage_rows(manifest, tmp_path)
    assert [row.stage_id for row in rows] == ["xy", "z"]
    assert rows[0].detail.startswith("not running")  # an ended run never shows a stage as live
    assert rows[1].mark == "?"


def test_small_terminals_keep_running_and_failed_stages() -> None:
    rows = stage_rows(
        {
            "status": "in_progress",
            "commands": [
                _entry(i, f"s{i}", "succeeded" if i < 8 else "pending") for i in range(1, 11)
            ]
            + [_entry(11, "live", "running"), _entry(12, "bad", "failed")],
        },
        Path("/nonexistent"),
    )
    kept, more = fit_rows(rows, 4)
    assert {"live", "bad"} <= {row.stage_id for row in kept} and len(kept) == 3
    assert more.startswith("… 9 more stages") and "pending" in more
    assert fit_rows(rows, 50) == (rows, "")
