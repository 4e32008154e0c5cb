"""The stage cache end to end under hostile conditions: an orchestrator killed mid-store, ten
concurrent runs on one key, outputs replaced by links out of the root (SPEC §16)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from helpers.cached_repo import Cached, reasons
from helpers.processes import wait_for
from helpers.runctl import kill_group

pytestmark = pytest.mark.slow

#: Writes the declared output, unless a link was planted on its way (the stage's own command
#: would follow it: the test is about what the tool writes).
WRITE_OUTPUT = (
    "[ -L dist ] || [ -L dist/app.txt ] || { mkdir -p dist && cp src/app.py dist/app.txt; }"
)


def _tree(directory: Path) -> list[tuple[str, int, bytes]]:
    return sorted(
        (str(path.relative_to(directory)), path.lstat().st_mtime_ns, path.read_bytes())
        for path in directory.rglob("*")
        if path.is_file()
    )


def test_an_output_restore_through_a_link_out_of_the_root_is_refused_and_the_stage_runs(
    cached: Cached, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "app.txt"
    victim.write_text("not yours\n")
    cached.repo.pipeline(
        cached.stage(
            "build", WRITE_OUTPUT, cache={"inputs": ["src/**"], "outputs": ["dist/app.txt"]}
        )
    )
    first = cached.start()
    assert cached.ran() == ["build"]
    dist = cached.root / "dist"
    before = _tree(outside)
    for plant, why in (
        ("the output", "'dist/app.txt' not restored: it is a symbolic link"),
        ("its directory", "'dist/app.txt' not restored: 'dist' on its way is a symbolic link"),
    ):
        shutil.rmtree(dist)
        if plant == "the output":
            dist.mkdir()
            os.symlink(victim, dist / "app.txt")
        else:
            os.symlink(outside, dist)
        plan = json.loads(cached.repo.cli("plan", "--format", "json").stdout)
        planned = plan["stages"][0]["cache"]
        assert (planned["status"], planned["reason"]) == ("miss", f"output {why}")  # as in a run
        result = cached.repo.cli("start", "--format", "json")
        assert result.returncode == 0, result.stderr
        (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert "refusing to restore output 'dist/app.txt'" in warning, warning
        assert "the stage runs instead; remove the link" in warning, warning
        (entry,) = cached.repo.manifest(json.loads(result.stdout))["commands"]
        assert cached.ran() == ["build"]  # it really ran: its own log, not the stored one
        assert entry["status"] == "succeeded" and entry["pid"] is not None
        assert (cached.root / entry["log_path"]).read_text() == "out-build\n"
        assert entry["cache"]["status"] == "miss"
        assert entry["cache"]["reason"] == f"output {why}"
        assert (entry["cache"]["store"], entry["cache"]["store_reason"]) == ("exists", None)
        assert _tree(outside) == before  # nothing written through the link
        assert os.path.islink(dist / "app.txt" if plant == "the output" else dist)
    shutil.rmtree(dist) if not dist.is_symlink() else dist.unlink()
    assert reasons(cached.start())["build"] == ("hit", None)  # the entry is still whole
    assert (dist / "app.txt").read_text() == "print('app')\n"
    assert first["commands"][0]["cache"]["store"] == "stored"


def _entries(cached: Cached) -> list[Path]:
    """The entry directories, whole or not."""
    return list((cached.root / ".runs" / ".cache" / "entries").glob("*/*"))


def test_an_orchestrator_killed_mid_store_leaves_nothing_that_could_hit(cached: Cached) -> None:
    # While the marker beside the root exists (no input: the key stays the same), the output
    # is a 2 GiB sparse file: its copy into the entry takes long enough to be caught midway.
    big = cached.root.parent / "big"
    big.write_text("")
    output = (
        f"if [ -e {big} ]; then truncate -s 2G dist/app.bin; else echo small > dist/app.bin; fi"
    )
    cached.repo.pipeline(
        cached.stage(
            "build",
            f"mkdir -p dist; {output}",
            cache={"inputs": ["src/**"], "outputs": ["dist/app.bin"]},
        )
    )
    start = cached.repo.spawn("start", "--format", "json", new_session=True)
    cache_dir = cached.root / ".runs" / ".cache"

    def storing() -> bool:
        assert start.poll() is None, "the store finished before it could be killed"
        partial = list(cache_dir.glob("**/outputs/0"))
        return bool(partial) and partial[0].stat().st_size > 0

    try:
        wait_for(storing, timeout=60, what="the store of the output to begin")
    finally:
        kill_group(start.pid)  # the orchestrator leads its own group: started so above
        start.communicate(timeout=60)
    assert start.returncode == -signal.SIGKILL
    assert cached.ran() == ["build"]
    assert _entries(cached) == []
    (leftover,) = (cache_dir / "tmp").iterdir()  # lookups never read tmp/
    big.unlink()
    result = cached.repo.cli("start", "--format", "json")
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    manifest = cached.repo.manifest(json.loads(result.stdout))
    assert reasons(manifest)["build"] == ("miss", "no entry")
    assert manifest["commands"][0]["cache"]["store"] == "stored"
    assert cached.ran() == ["build"]
    assert len(_entries(cached)) == 1
    (cached.root / "dist" / "app.bin").unlink()
    assert reasons(cached.start())["build"] == ("hit", None)
    assert cached.ran() == []
    assert (cached.root / "dist" / "app.bin").read_text() == "small\n"
    shutil.rmtree(leftover)  # (the partial copy is real bytes on disk: free them now)
