"""Properties of bounded error files and id validation (hypothesis)."""

from __future__ import annotations

import json
import string
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from codex_orchestrator.records.errorfile import (
    MAX_COMMAND_BYTES,
    MAX_DETAIL_BYTES,
    MAX_FILE_BYTES,
    build_error_file,
    clean_text,
    utf8_tail,
)
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.ids import is_valid_id, new_run_id

HEADER = {
    "run_id": "r",
    "task_id": "t",
    "command_index": 1,
    "command_id": "c",
    "reason": "command-failed",
}
NASTY = st.one_of(
    st.binary(max_size=40_000),
    st.text(max_size=20_000).map(lambda text: text.encode("utf-8")),
    st.builds(
        lambda char, count: char * count,
        st.sampled_from([b"\x00", b"\x01", b'"', b"\\", b"\xe2\x82\xac", b"\xff"]),
        st.integers(0, 30_000),
    ),
)


@settings(max_examples=150, deadline=None)
@given(stdout=NASTY, stderr=NASTY, command=st.text(max_size=12_000))
def test_error_file_is_bounded_and_parseable(stdout: bytes, stderr: bytes, command: str) -> None:
    payload = build_error_file(HEADER, command, {"exit_code": 1}, stdout, stderr)
    assert len(payload) <= MAX_FILE_BYTES
    document = json.loads(payload)
    details = document["details"]
    for key, raw in (("stdout", stdout), ("stderr", stderr)):
        kept = details[key]
        assert len(kept.encode("utf-8")) <= MAX_DETAIL_BYTES
        assert clean_text(raw).endswith(kept)
        assert details[f"{key}_truncated"] == (kept != clean_text(raw))
    assert clean_text(command.encode("utf-8", errors="replace")).endswith(document["command"])
    assert len(document["command"].encode("utf-8")) <= MAX_COMMAND_BYTES


def test_stdout_is_shortened_before_stderr() -> None:
    payload = build_error_file(HEADER, "cmd", {}, b"o" * 9000, b"e" * 9000)
    details = json.loads(payload)["details"]
    assert len(details["stderr"]) == MAX_DETAIL_BYTES
    assert len(details["stdout"]) < MAX_DETAIL_BYTES


@given(st.text(max_size=3000), st.integers(0, 5000))
def test_utf8_tail_cuts_on_character_boundary(text: str, limit: int) -> None:
    tail, cut = utf8_tail(text, limit)
    assert text.endswith(tail) and len(tail.encode("utf-8")) <= limit
    assert cut == (tail != text)


_ID_ALPHABET = string.ascii_letters + string.digits + "_-"


def _follows_the_id_rule(value: str) -> bool:
    """The documented rule, spelled out without the regex it checks."""
    return (
        1 <= len(value) <= 128
        and value[0] in string.ascii_letters + string.digits
        and all(char in _ID_ALPHABET for char in value)
    )


@given(st.text(max_size=200) | st.text(alphabet=_ID_ALPHABET + "./\n é", max_size=140))
def test_id_rule_and_paths_stay_inside(value: str) -> None:
    valid = is_valid_id(value)
    assert valid == _follows_the_id_rule(value)
    if valid:
        workspace = Workspace(root=Path("/r"), runs_dir=Path("/r/.runs"), out_dir=Path("/r/out"))
        path = workspace.run_dir(value, value)
        assert path.parent.parent.parent == Path("/r/.runs") and ".." not in path.parts


def test_id_rule_examples() -> None:
    assert is_valid_id("0202-orchestrator_hardening") and is_valid_id("a" * 128)
    for bad in ("", "a" * 129, "-lead", "_lead", "..", "a/b", "a\nb", "é", "a.b"):
        assert not is_valid_id(bad), bad


def test_run_ids_are_valid_sortable_and_unique() -> None:
    ids = [new_run_id(1_700_000_000.25 + i * 0.01) for i in range(200)]
    assert all(is_valid_id(run_id) for run_id in ids)
    assert ids[0].startswith("2023-11-14T22-13-20-250Z-")
    assert ids == sorted(ids)
    same_moment = {new_run_id(1_700_000_000.0) for _ in range(500)}
    assert len(same_moment) == 500


def test_long_command_never_crowds_out_the_outputs() -> None:
    command = "python3 -c '" + "x = 1; " * 2000 + "'"
    payload = build_error_file(HEADER, command, {}, b"out\n", b"real failure reason\n")
    document = json.loads(payload)
    assert document["details"]["stderr"] == "real failure reason\n"
    assert document["details"]["stdout"] == "out\n"
    assert document["command_truncated"] is True
