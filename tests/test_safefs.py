"""The no-follow writer, the containment check and the checked JSON loader, on real files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from codex_orchestrator.errors import ConfigError, OutsideRootError, UnsafeInputError
from codex_orchestrator.jsonio import append_line, atomic_write_bytes, loads_checked
from codex_orchestrator.safefs import open_no_follow, read_inside, resolve_within


def test_open_no_follow_refuses_a_link_and_leaves_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(OSError) as raised:
        open_no_follow(tmp_path / "link", os.O_WRONLY | os.O_TRUNC)
    assert raised.value.errno == errno.ELOOP
    assert "symbolic link" in str(raised.value)
    with pytest.raises(OSError):
        append_line(tmp_path / "link", "{}")
    assert victim.read_text() == "precious"


def test_atomic_writes_replace_a_link_instead_of_writing_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "state.json").symlink_to(victim)
    atomic_write_bytes(tmp_path / "state.json", b"{}\n")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "state.json").is_symlink()


def test_resolve_within(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "inner").mkdir(parents=True)
    outside.mkdir()
    (root / "in").symlink_to(root / "inner")
    (root / "out").symlink_to(outside)
    assert resolve_within(root / "in" / "x", root, "in/x", "fix") == root / "inner" / "x"
    assert resolve_within(root, root, ".", "fix") == root
    for shown in ("out/x", "../outside", "out"):
        with pytest.raises(OutsideRootError, match="outside"):
            resolve_within(root / shown, root, shown, "fix")
    (outside / "secret").write_text("s")
    with pytest.raises(OutsideRootError):
        read_inside(root, "out/secret", 100)
    (tmp_path / "rootx").mkdir()  # a sibling sharing the prefix is not inside
    with pytest.raises(OutsideRootError):
        resolve_within(tmp_path / "rootx", root, "rootx", "fix")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a": {"b": [1, {"c": 1, "c": 2}]}}', "a.b[1].c: key given twice"),
        (b'{"a b": {"x": 1, "x": 1}}', '["a b"].x: key given twice'),
        (b'{"k": ["ok", "\\udc80"]}', "k[1]: holds a lone surrogate"),
        (b'{"\\ud800": 1}', "a key holds a lone surrogate"),
        (b"\xef\xbb\xbf\xff", "not valid UTF-8 (byte 0)"),
        (b'{"a": 1,}', "cfg:1:9: invalid JSON"),
        (b"1" * 5000, "invalid JSON value"),
    ],
)
def test_loads_checked_refuses_with_one_line(data: bytes, message: str) -> None:
    with pytest.raises(UnsafeInputError) as raised:
        loads_checked(data, "cfg", strict=True)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_loads_checked_accepts_and_chooses_its_error() -> None:
    assert loads_checked(b'\xef\xbb\xbf{"a": [1, "\\u00e9"]}', "cfg", strict=True) == {
        "a": [1, "é"]
    }
    assert loads_checked(b'{"a": 1, "a": 2}', "pkg") == {"a": 2}  # lenient by default
    with pytest.raises(ConfigError):
        loads_checked(b"{", "cfg", error=ConfigError)
