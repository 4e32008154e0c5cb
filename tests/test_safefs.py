"""The no-follow writer, the containment check and the checked JSON loader, on real files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from codex_orchestrator.errors import ConfigError, OutsideRootError, UnsafeInputError
from codex_orchestrator.util.jsonio import (
    append_line,
    atomic_write_bytes,
    encode_record,
    loads_checked,
    quarantine,
    valid_text,
)
from codex_orchestrator.util.safefs import (
    UnreadableFileError,
    list_directory,
    new_directory,
    open_no_follow,
    read_at,
    read_inside,
    read_regular,
    real_directory,
    remove_file,
    remove_tree,
    rename_no_follow,
    resolve_within,
)


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


def _linked_records(tmp_path: Path) -> tuple[Path, Path]:
    """A records directory whose ``run`` subdirectory is a link to ``outside``, which holds a
    file, a directory and a log; returns (the linked directory as the tool would name it,
    outside)."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "manifest.json").write_text("precious")
    (outside / "sub" / "kept").write_text("precious")
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "run").symlink_to(outside, target_is_directory=True)
    return tmp_path / "records" / "run", outside


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.rglob("*")) == ["kept", "manifest.json", "sub"]
    assert (outside / "manifest.json").read_text() == "precious"
    assert (outside / "sub" / "kept").read_text() == "precious"


def test_links_no_record_access_follows_a_linked_directory(tmp_path: Path) -> None:
    """Every way the tool touches a record refuses a link *above* the file, not only at it."""
    linked, outside = _linked_records(tmp_path)
    accesses = {
        "open for append": lambda: open_no_follow(
            linked / "manifest.json", os.O_WRONLY | os.O_APPEND
        ),
        "read": lambda: read_regular(linked / "manifest.json", 100, follow_links=False),
        "read at": lambda: read_at(linked / "manifest.json", 0, 10),
        "append a line": lambda: append_line(linked / "metrics.json", "{}"),
        "atomic write": lambda: atomic_write_bytes(linked / "manifest.json", b"{}"),
        "atomic write below": lambda: atomic_write_bytes(linked / "sub" / "kept", b"{}"),
        "list": lambda: list_directory(linked / "sub"),
        "make a directory": lambda: real_directory(linked / "new" / "deeper"),
        "new directory": lambda: new_directory(linked / "fresh"),
        "rename": lambda: rename_no_follow(linked / "manifest.json", linked / "moved"),
        "quarantine": lambda: quarantine(linked / "manifest.json"),
        "delete a file": lambda: remove_file(linked / "manifest.json"),
        "delete a tree": lambda: remove_tree(linked / "sub"),
        "delete the link's target": lambda: remove_tree(linked),
    }
    for what, access in accesses.items():
        with pytest.raises(OSError) as raised:
            access()
        assert "symbolic link" in str(raised.value), what
        _untouched(outside)
    assert (tmp_path / "records" / "run").is_symlink()


def test_links_a_fifo_never_blocks_a_record_open(tmp_path: Path) -> None:
    """A FIFO in place of a record is refused at once, for reading and for writing (a plain
    ``open`` for writing would wait for a reader forever)."""
    fifo = tmp_path / "orchestrator.log"
    os.mkfifo(fifo)
    for flags in (os.O_RDONLY, os.O_WRONLY | os.O_APPEND, os.O_RDWR | os.O_CREAT):
        with pytest.raises(UnreadableFileError, match="a FIFO"):
            open_no_follow(fifo, flags)
    with pytest.raises(OSError, match="FIFO"):
        append_line(fifo, "{}")
    with pytest.raises(UnreadableFileError, match="FIFO"):
        read_regular(fifo, 100, follow_links=False)


def test_links_deleting_a_tree_removes_links_inside_it_not_their_targets(tmp_path: Path) -> None:
    _, outside = _linked_records(tmp_path)
    doomed = real_directory(tmp_path / "records" / "doomed")
    (doomed / "to-outside").symlink_to(outside, target_is_directory=True)
    (doomed / "file").write_text("x")
    remove_tree(doomed)
    assert not doomed.exists()
    _untouched(outside)


def test_text_from_the_environment_is_made_valid_before_it_is_recorded() -> None:
    user = os.fsdecode(b"bad\xffname")  # how Python hands over $USER when it is not UTF-8
    assert user == "bad\udcffname"
    assert valid_text(user) == "bad\ufffdname"
    assert valid_text("emoji \U0001f600 ok") == "emoji \U0001f600 ok"
    assert valid_text("\ud800 lone high") == "\ufffd lone high"
    assert encode_record('{"actor": "bad\udcffname"}') == '{"actor": "bad\ufffdname"}'.encode()
