"""Entries on disk: hits, misses and their reasons, verification, restore, eviction, upkeep."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from codex_orchestrator.cache.errors import CacheStoreError, CorruptEntryError
from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.cache.store import Hit, Miss
from codex_orchestrator.errors import OutsideRootError

from .cache_kit import Stage, entry_dirs, write

LOG = b"\x1b[32mok\x1b[0m 3 passed\r\n\x00\xff no newline at the end"


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    root = tmp_path / "root"
    write(root, "src/app.py", "print('app')\n")
    write(root, "src/lib.py", "print('lib')\n")
    write(root, "build/report/coverage.xml", "<coverage/>\n")
    write(root, "build/tool.sh", "#!/bin/sh\n").chmod(0o755)
    spec = CacheSpec(inputs=("src/**",), outputs=("build/report/*.xml", "build/tool.sh"))
    return Stage(root, tmp_path / "cache", spec, racy_margin_ns=0)


def _hit(stage: Stage) -> Hit:
    found = stage.lookup()
    assert isinstance(found, Hit), found
    return found


def _reason(stage: Stage) -> str:
    found = stage.lookup()
    assert isinstance(found, Miss), found
    return found.reason


def _entry(stage: Stage) -> Path:
    (entry,) = entry_dirs(stage.cache)
    return entry


def test_a_stored_success_is_a_hit_naming_the_run_that_ran_it(stage: Stage) -> None:
    assert _reason(stage) == "no entry"
    assert stage.store("run-1", stdout=LOG) == "stored"
    hit = _hit(stage)
    assert hit.from_run == "run-1"
    assert hit.saved_seconds == 12.5
    entry = hit.entry
    assert (entry.task, entry.pipeline, entry.stage, entry.summary) == (
        "default",
        "main",
        "test",
        "all passed",
    )
    assert entry.created_at.endswith("Z")
    assert stage.warnings == []


def test_misses_say_what_changed_since_the_latest_entry(stage: Stage) -> None:
    stage.store()
    write(stage.root, "src/lib.py", "print('changed')\n")
    assert _reason(stage) == "src/lib.py modified"
    stage.store("run-2")
    write(stage.root, "src/zzz.py")
    assert _reason(stage) == "src/zzz.py added"
    (stage.root / "src/zzz.py").unlink()
    assert isinstance(stage.lookup(), Hit)  # back to what run-2 stored
    stage.command = "make test -x"
    assert _reason(stage) == "command changed"
    stage.identity = "main/other"
    assert _reason(stage) == "no entry"


def test_an_evicted_entry_is_no_entry(stage: Stage) -> None:
    stage.store()
    stage.store_handle().evict(0)
    assert _reason(stage) == "no entry"


def test_restore_writes_the_original_log_bytes_and_outputs(stage: Stage, tmp_path: Path) -> None:
    stage.store("run-1", stdout=LOG, stderr=b"warning: x\n")
    hit = _hit(stage)
    for path in ("build/report/coverage.xml", "build/tool.sh"):
        (stage.root / path).unlink()
    (stage.root / "build" / "report").rmdir()
    run = tmp_path / "run2"
    run.mkdir()
    (run / "stdout.log").write_bytes(b"stale bytes that must go away" * 10)
    restored = stage.store_handle().restore(hit, stdout=run / "stdout.log", stderr=run / "e.log")
    assert restored == ("build/report/coverage.xml", "build/tool.sh")
    assert (run / "stdout.log").read_bytes() == LOG
    assert (run / "e.log").read_bytes() == b"warning: x\n"
    assert (stage.root / "build/report/coverage.xml").read_text() == "<coverage/>\n"
    assert os.access(stage.root / "build/tool.sh", os.X_OK)
    assert not [p for p in (stage.root / "build").rglob("*") if "restore" in p.name]


def test_an_output_through_a_link_is_refused_and_nothing_is_written(
    stage: Stage, tmp_path: Path
) -> None:
    stage.store()
    hit = _hit(stage)
    outside = tmp_path / "outside"
    outside.mkdir()
    report = stage.root / "build" / "report"
    (report / "coverage.xml").unlink()
    report.rmdir()
    os.symlink(outside, report)
    run = tmp_path / "run2"
    run.mkdir()
    with pytest.raises(OutsideRootError) as refused:
        stage.store_handle().restore(hit, stdout=run / "o.log", stderr=run / "e.log")
    message = str(refused.value)
    assert "build/report/coverage.xml" in message and "link" in message and "\n" not in message
    assert list(outside.iterdir()) == []
    assert list(run.iterdir()) == []  # refused before the logs were written


def test_an_output_that_is_now_a_link_is_refused(stage: Stage, tmp_path: Path) -> None:
    stage.store()
    hit = _hit(stage)
    victim = tmp_path / "victim.sh"
    victim.write_text("precious\n")
    (stage.root / "build/tool.sh").unlink()
    os.symlink(victim, stage.root / "build/tool.sh")
    with pytest.raises(OutsideRootError, match="symbolic link"):
        stage.store_handle().restore(hit, stdout=tmp_path / "o", stderr=tmp_path / "e")
    assert victim.read_text() == "precious\n"


def test_an_output_that_is_a_link_or_special_file_is_not_stored(stage: Stage) -> None:
    os.symlink("coverage.xml", stage.root / "build/report/alias.xml")
    with pytest.raises(CacheStoreError, match=r"alias\.xml is a symbolic link"):
        stage.store()
    assert entry_dirs(stage.cache) == []
    assert list((stage.cache / "tmp").iterdir()) == []
    (stage.root / "build/report/alias.xml").unlink()
    os.mkfifo(stage.root / "build/report/fifo.xml")
    with pytest.raises(CacheStoreError, match=r"fifo\.xml is a FIFO"):
        stage.store()


def _damage_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _rewrite_json(path: Path, change: object) -> None:
    document = json.loads(path.read_text())
    change(document)  # type: ignore[operator]
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda entry: _damage_byte(entry / "stdout.log"), "stdout.log does not match its sha256"),
        (lambda entry: _damage_byte(entry / "outputs/0"), "outputs/0 does not match its sha256"),
        (lambda entry: os.truncate(entry / "outputs/1", 3), "outputs/1 has 3 bytes, not 10"),
        (lambda entry: (entry / "stderr.log").unlink(), "a file of it is missing"),
        (lambda entry: (entry / "entry.json").write_text("{not json"), "not valid JSON"),
        (lambda entry: (entry / "entry.json").write_bytes(b""), "not valid JSON"),
        (
            lambda entry: _rewrite_json(entry / "entry.json", lambda d: d.update(summary="forged")),
            "does not match its checksum",
        ),
        (
            lambda entry: _rewrite_json(
                entry / "entry.json", lambda d: d["outputs"][0].update(path="../escape")
            ),
            "does not match its checksum",
        ),
        (
            lambda entry: (
                (entry / "stdout.log").unlink(),
                os.symlink("/etc/hostname", entry / "stdout.log"),
            ),
            "cannot be read",
        ),
    ],
)
def test_a_damaged_entry_is_a_miss_with_one_warning(stage: Stage, damage: object, why: str) -> None:
    stage.store()
    damage(_entry(stage))  # type: ignore[operator]
    reason = _reason(stage)
    assert reason.startswith("entry damaged (") and why in reason, reason
    assert len(stage.warnings) == 1, stage.warnings
    assert why in stage.warnings[0] and "main/test" in stage.warnings[0]
    assert stage.warnings[0].startswith("warning: ") and "\n" not in stage.warnings[0]
    # storing again replaces the damaged entry
    assert stage.store("run-2") == "stored"
    assert _hit(stage).from_run == "run-2"


def test_a_forged_entry_pointing_outside_the_root_is_refused(stage: Stage) -> None:
    stage.store()
    entry = _hit(stage).entry
    for path in ("../escape", "/etc/passwd", "a/./b", "a//b", ""):
        outputs = (entry.outputs[0]._replace(path=path),)
        forged = entry._replace(outputs=outputs)  # its checksum recomputed
        (_entry(stage) / "entry.json").write_text(json.dumps(forged.to_json()))
        stage.warnings.clear()
        assert "lists an output outside the root" in _reason(stage)
        assert len(stage.warnings) == 1


def test_an_entry_damaged_after_the_lookup_fails_its_restore_cleanly(
    stage: Stage, tmp_path: Path
) -> None:
    stage.store()
    hit = _hit(stage)
    _damage_byte(_entry(stage) / "outputs/0")
    write(stage.root, "build/report/coverage.xml", "current\n")
    with pytest.raises(CorruptEntryError, match="outputs/0"):
        stage.store_handle().restore(hit, stdout=tmp_path / "o", stderr=tmp_path / "e")
    assert (stage.root / "build/report/coverage.xml").read_text() == "current\n"
    assert sorted(p.name for p in (stage.root / "build/report").iterdir()) == ["coverage.xml"]
    _damage_byte(_entry(stage) / "stdout.log")
    with pytest.raises(CorruptEntryError, match=r"stdout\.log"):
        stage.store_handle().restore(hit, stdout=tmp_path / "o", stderr=tmp_path / "e")
    assert (tmp_path / "o").read_bytes() == b""  # no damaged bytes left in the log


def _store_variant(stage: Stage, command: str, run_id: str, size: int) -> str:
    stage.command = command
    stage.store(run_id, stdout=b"x" * size)
    return stage.fingerprint().key


def test_eviction_removes_the_least_recently_used_first(stage: Stage, tmp_path: Path) -> None:
    keys = [_store_variant(stage, f"cmd {n}", f"run-{n}", 10_000) for n in range(3)]
    now = time.time()
    for age, key in zip((300, 100, 200), keys, strict=True):  # run-1 used most recently
        used = stage.cache / "entries" / key[7:9] / key[7:] / "used"
        os.utime(used, (now - age, now - age))
    sizes = {key: 0 for key in keys}
    for key in keys:
        for path in (stage.cache / "entries" / key[7:9] / key[7:]).rglob("*"):
            if path.is_file():
                sizes[key] += path.stat().st_size
    eviction = stage.store_handle().evict(sizes[keys[1]] + 1)
    assert [e.key for e in eviction.removed] == [keys[0], keys[2]]
    assert [e.from_run for e in eviction.removed] == ["run-0", "run-2"]
    assert eviction.freed_bytes == sizes[keys[0]] + sizes[keys[2]]
    assert eviction.kept_bytes == sizes[keys[1]]
    assert stage.store_handle().cited_runs() == frozenset({"run-1"})
    assert stage.store_handle().evict(10**9).removed == ()


def test_a_restore_marks_the_entry_used(stage: Stage, tmp_path: Path) -> None:
    stage.store()
    used = _entry(stage) / "used"
    os.utime(used, (1000, 1000))
    stage.lookup()
    assert used.stat().st_mtime == 1000  # a lookup only reads
    stage.store_handle().restore(_hit(stage), stdout=tmp_path / "o", stderr=tmp_path / "e")
    assert used.stat().st_mtime > time.time() - 60


def test_cited_runs_name_every_kept_entry(stage: Stage) -> None:
    assert stage.store_handle().cited_runs() == frozenset()
    _store_variant(stage, "a", "run-a", 1)
    _store_variant(stage, "b", "run-b", 1)
    assert stage.store_handle().cited_runs() == frozenset({"run-a", "run-b"})


def test_sweep_removes_only_old_leftovers(stage: Stage) -> None:
    stage.store()
    tmp = stage.cache / "tmp"
    old, fresh = tmp / "old.123.killed", tmp / "fresh.456.storing"
    for leftover in (old, fresh):
        write(leftover, "stdout.log", "partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert stage.store_handle().sweep_partial(3600) == 1
    assert sorted(p.name for p in tmp.iterdir()) == [fresh.name]
    assert isinstance(stage.lookup(), Hit)


def test_the_cache_directory_ignores_itself_and_holds_no_absolute_root(stage: Stage) -> None:
    stage.store()
    assert (stage.cache / ".gitignore").read_text() == "*\n"
    for path in [*(stage.cache / "entries").rglob("*"), *(stage.cache / "latest").rglob("*")]:
        if path.is_file():
            assert str(stage.root).encode() not in path.read_bytes(), path


def test_two_stores_of_one_key_keep_the_first_entry(stage: Stage) -> None:
    assert stage.store("run-1") == "stored"
    assert stage.store("run-2") == "exists"
    assert _hit(stage).from_run == "run-1"
    assert len(entry_dirs(stage.cache)) == 1
    assert list((stage.cache / "tmp").iterdir()) == []
