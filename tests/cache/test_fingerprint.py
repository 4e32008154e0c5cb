"""Fingerprints: content digests, the stat fast path, racy timestamps, unstable inputs, and the
stat cache, on real files; file opens are counted by an audit hook in a child process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.cache.store import Miss

from .cache_kit import Stage, run_script, write

#: A child that fingerprints a stage several times and prints, for each, the input files it
#: opened (an audit hook sees every os.open, whatever the directory descriptor).
COUNT_OPENS = """
import json, os
stage.racy_margin_ns = int(sys.argv[3])
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        opened.append(os.path.basename(os.fsdecode(args[0])))
sys.addaudithook(hook)
for step in json.loads(sys.argv[4]):
    for path, text in step.items():
        with open(os.path.join(stage.root, path), "w") as handle:
            handle.write(text)
    opened.clear()
    digests = stage.inputs()
    seen = sorted(name for name in opened if name.startswith("in_"))
    print(json.dumps({"opened": seen, "digest": digests.digest}))
"""


def _opens(stage: Stage, margin_ns: int, steps: list[dict[str, str]]) -> list[dict[str, object]]:
    output = run_script(COUNT_OPENS, stage, str(margin_ns), json.dumps(steps))
    return [json.loads(line) for line in output.splitlines()]


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    root = tmp_path / "root"
    for name in ("in_a.py", "in_b.py", "sub/in_c.py"):
        write(root, f"src/{name}", f"content of {name}\n")
    return Stage(root, tmp_path / "cache", CacheSpec(inputs=("src/**",)))


def test_a_file_digest_is_the_sha256_of_its_bytes(stage: Stage) -> None:
    digests = stage.inputs()
    position = digests.paths.index("src/in_a.py")
    expected = hashlib.sha256((stage.root / "src/in_a.py").read_bytes()).digest()
    assert digests.entry(position)[1:] == expected
    sha256sum = subprocess.run(
        ["sha256sum", "src/in_a.py"], cwd=stage.root, capture_output=True, text=True, check=True
    )
    assert sha256sum.stdout.split()[0] == expected.hex()


def test_the_stat_fast_path_reads_only_what_moved(stage: Stage) -> None:
    first, second, third = _opens(stage, 0, [{}, {}, {"src/in_b.py": "edited\n"}])
    assert first["opened"] == ["in_a.py", "in_b.py", "in_c.py"]
    assert second["opened"] == []  # nothing moved: nothing read
    assert second["digest"] == first["digest"]
    assert third["opened"] == ["in_b.py"]
    assert third["digest"] != first["digest"]


def test_racy_entries_are_read_again(stage: Stage) -> None:
    # Files changed within the margin of a snapshot are racy: their stat is not trusted. The
    # margin is an hour here, not the default 2 s, so a loaded machine cannot age them out.
    first, second = _opens(stage, 3_600_000_000_000, [{}, {}])
    assert first["opened"] == ["in_a.py", "in_b.py", "in_c.py"]
    assert second["opened"] == ["in_a.py", "in_b.py", "in_c.py"]


def test_same_size_content_with_its_mtime_put_back_is_seen(stage: Stage) -> None:
    stage.racy_margin_ns = 0
    path = stage.root / "src" / "in_a.py"
    before = stage.inputs().digest
    info = path.stat()
    path.write_text(path.read_text().upper())  # same size
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_size == info.st_size and path.stat().st_mtime_ns == info.st_mtime_ns
    assert stage.inputs().digest != before  # the ctime moved


def test_added_deleted_and_replaced_inputs_change_the_digest(stage: Stage) -> None:
    stage.racy_margin_ns = 0
    seen = {stage.inputs().digest}
    write(stage.root, "src/in_d.py")
    seen.add(stage.inputs().digest)
    (stage.root / "src" / "in_d.py").unlink()
    assert stage.inputs().digest in seen  # back to the first set
    (stage.root / "src" / "in_a.py").unlink()
    os.symlink("in_b.py", stage.root / "src" / "in_a.py")
    seen.add(stage.inputs().digest)
    (stage.root / "src" / "in_b.py").chmod(0o755)  # the executable bit is content
    seen.add(stage.inputs().digest)
    assert len(seen) == 4


def test_an_input_changing_while_it_is_read_is_a_miss_never_stored(stage: Stage) -> None:
    big = stage.root / "src" / "in_big.bin"
    big.write_bytes(os.urandom(1 << 20) * 32)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY)\n"
            "while True:\n    os.pwrite(fd, os.urandom(16), 0)\n",
            str(big),
        ]
    )
    try:
        problem = None
        for _ in range(50):
            fingerprint = stage.fingerprint()
            if fingerprint.problem is not None:
                problem = fingerprint.problem
                break
    finally:
        writer.kill()
        writer.wait()
    assert problem == "src/in_big.bin changed while it was read"
    found = stage.store_handle().lookup(stage.identity, fingerprint)
    assert found == Miss(fingerprint.key, problem)
    assert stage.store(fingerprint=fingerprint) == "not stored"
    assert not (stage.cache / "entries").exists()


def test_a_damaged_stat_cache_is_ignored_with_one_warning(stage: Stage) -> None:
    stage.racy_margin_ns = 0
    digest = stage.inputs().digest
    (stat_file,) = (stage.cache / "stat").iterdir()
    for damage in (b"", b"{}\n", stat_file.read_bytes()[:-5], b"x" * 100):
        stat_file.write_bytes(damage)
        stage.warnings.clear()
        fingerprinter = stage.fingerprinter()
        assert fingerprinter.inputs(stage.spec).digest == digest
        assert len(stage.warnings) == 1, stage.warnings
        assert "damaged stat cache" in stage.warnings[0] and "\n" not in stage.warnings[0]
    # a later lookup has rewritten it: no warning any more
    stage.warnings.clear()
    assert stage.inputs().digest == digest
    assert stage.warnings == []


def test_a_tampered_stat_cache_of_another_root_is_not_used(stage: Stage, tmp_path: Path) -> None:
    other = Stage(tmp_path / "other", stage.cache, stage.spec, racy_margin_ns=0)
    for name in ("in_a.py", "in_b.py", "sub/in_c.py"):
        write(other.root, f"src/{name}", f"content of {name}\n")
    stage.racy_margin_ns = 0
    assert stage.inputs().digest == other.inputs().digest  # same content, same key
    assert len(list((stage.cache / "stat").iterdir())) == 2  # one stat cache per root
    files = list((stage.cache / "stat").iterdir())
    (theirs,) = [path for path in files if str(other.root).encode() in path.read_bytes()]
    (mine,) = [path for path in files if path != theirs]
    theirs.write_bytes(mine.read_bytes())  # a stat cache copied to the other root's name
    other.warnings.clear()
    other.inputs()
    assert len(other.warnings) == 1 and "another root" in other.warnings[0]


def test_read_only_fingerprints_write_nothing(stage: Stage) -> None:
    stage.read_only = True
    stage.inputs()
    assert not stage.cache.exists()
    stage.read_only = False
    stage.inputs()
    (stat_file,) = (stage.cache / "stat").iterdir()
    before = stat_file.stat().st_mtime_ns
    write(stage.root, "src/in_new.py")
    stage.read_only = True
    stage.inputs()
    assert stat_file.stat().st_mtime_ns == before
    assert sorted(path.name for path in stage.cache.iterdir()) == ["stat"]


@pytest.mark.slow
def test_memory_stays_flat_hashing_a_large_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with open(root / "huge.bin", "wb") as handle:  # sparse: costs no disk
        handle.truncate(256 * 1024 * 1024)
    stage = Stage(root, tmp_path / "cache", CacheSpec(inputs=("huge.bin",)))
    body = (
        "status = lambda: open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
        "base = int(status())\n"
        "print(stage.inputs().problem, int(status()) - base)"
    )
    started = time.monotonic()
    problem, growth_kib = run_script(body, stage).split()
    assert problem == "None"
    assert int(growth_kib) < 8 * 1024, f"peak grew by {growth_kib} KiB hashing 256 MiB"
    assert time.monotonic() - started < 100


SCANS = """
from codex_orchestrator.cache.spec import CacheSpec
fingerprinter = stage.fingerprinter()
scans = []
sys.addaudithook(lambda event, args: scans.append(event) if event == "os.scandir" else None)
specs = [CacheSpec(inputs=("src/**",)), CacheSpec(inputs=("src/*.py", "src/sub")), stage.spec]
with fingerprinter.snapshot():
    for spec in specs:
        fingerprinter.inputs(spec)
print(len(scans))
scans.clear()
for spec in specs:
    fingerprinter.inputs(spec)
print(len(scans))
"""


def test_a_snapshot_reads_each_directory_once(stage: Stage) -> None:
    inside, outside = run_script(SCANS, stage).split()
    assert inside == "2"  # src and src/sub, once for three specs
    assert outside == "6"


def test_a_snapshot_answers_as_of_its_start_and_ends_with_its_block(stage: Stage) -> None:
    stage.racy_margin_ns = 0
    fingerprinter = stage.fingerprinter()
    before = fingerprinter.inputs(stage.spec)
    with fingerprinter.snapshot():
        first = fingerprinter.inputs(stage.spec)
        write(stage.root, "src/in_a.py", "changed meanwhile\n")
        write(stage.root, "src/in_new.py")
        assert fingerprinter.inputs(stage.spec) is first
    assert first.digest == before.digest
    after = fingerprinter.inputs(stage.spec)
    assert after.digest != before.digest and "src/in_new.py" in after.paths


def test_threads_sharing_a_fingerprinter_get_right_digests(tmp_path: Path) -> None:
    root = tmp_path / "root"
    contents = {f"big{n}.bin": os.urandom(4 << 20) for n in range(4)}
    for name, content in contents.items():
        write(root, name, content)
    fingerprinter = Stage(root, tmp_path / "cache", read_only=True).fingerprinter()
    results: dict[str, list[bytes]] = {name: [] for name in contents}

    def hash_one(name: str) -> None:
        for _ in range(3):
            digests = fingerprinter.inputs(CacheSpec(inputs=(name,)))
            results[name].append(digests.entry(0)[1:])

    threads = [threading.Thread(target=hash_one, args=(name,)) for name in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, content in contents.items():
        assert results[name] == [hashlib.sha256(content).digest()] * 3, name
