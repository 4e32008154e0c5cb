"""The ``"git"`` fast path, where git vouches for unchanged tracked files: it must be taken when
nothing changed, and every change must still be seen. Each answer is checked against a
fingerprint taken from scratch (a fresh cache directory: everything hashed)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.cache.digests import RACY_MARGIN_NS
from codex_orchestrator.cache.inputs import TreeReader
from codex_orchestrator.cache.spec import CacheSpec

from .cache_kit import Stage, write
from .gitrepo import git

FILES = [f"src/m{n:02d}.py" for n in range(12)] + [".gitignore", "README.md"]


SPECS = {
    "git": CacheSpec(inputs="git"),
    "globs": CacheSpec(inputs=("src/**", "*.md", "notes.txt")),
}


@pytest.fixture(params=sorted(SPECS))
def stage(tmp_path: Path, request: pytest.FixtureRequest) -> Stage:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for name in FILES:
        write(root, name, "build/\n" if name == ".gitignore" else f"{name}\n")
        past = time.time() - 3600  # older than the index: git records real stat data
        os.utime(root / name, (past, past))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    write(root, "notes.txt", "untracked\n")
    return Stage(root, tmp_path / "cache", SPECS[request.param], racy_margin_ns=0)


def _truth(stage: Stage) -> str:
    fresh = stage.cache.parent / f"fresh-{time.monotonic_ns()}"
    return Stage(stage.root, fresh, stage.spec, read_only=True).inputs().digest


class _Spy:
    """Counts what lookups do: full listings, walks for names only, paths ``lstat``ed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.listings = 0
        self.name_walks = 0
        self.stat_paths: list[str] = []
        list_inputs, stat_paths = TreeReader.list_inputs, TreeReader.stat_paths
        match_names = TreeReader.match_names

        def counting_list(tree: TreeReader, *args: Any, **kwargs: Any) -> Any:
            self.listings += 1
            return list_inputs(tree, *args, **kwargs)

        def counting_names(tree: TreeReader, *args: Any, **kwargs: Any) -> Any:
            self.name_walks += 1
            return match_names(tree, *args, **kwargs)

        def counting_stat(tree: TreeReader, paths: Any) -> Any:
            self.stat_paths += list(paths)
            return stat_paths(tree, paths)

        monkeypatch.setattr(TreeReader, "list_inputs", counting_list)
        monkeypatch.setattr(TreeReader, "match_names", counting_names)
        monkeypatch.setattr(TreeReader, "stat_paths", counting_stat)


def test_git_vouches_for_unchanged_tracked_files(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = stage.inputs()  # the ordinary path, which records what git can vouch for
    spy = _Spy(monkeypatch)
    second = stage.inputs()
    assert second.digest == first.digest == _truth(stage)
    assert spy.listings == 1  # only the truth's own listing
    assert "notes.txt" in spy.stat_paths  # untracked: looked at by us
    assert not any(path.startswith("src/") for path in spy.stat_paths[:1])


def test_the_fast_path_looks_only_at_what_git_cannot_vouch_for(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage.inputs()
    spy = _Spy(monkeypatch)
    stage.inputs()
    assert spy.listings == 0
    assert spy.stat_paths == ["notes.txt"]


@pytest.mark.parametrize("stage", ["globs"], indirect=True)  # git lists the "git" names
def test_unmoved_directories_spare_the_walk(stage: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    stage.inputs()
    spy = _Spy(monkeypatch)
    digest = stage.inputs().digest
    assert (spy.listings, spy.name_walks) == (0, 0)
    write(stage.root, "src/deeper/new.py")  # src moves: its names are read again
    after = stage.inputs().digest
    assert (spy.listings, spy.name_walks) == (1, 1)  # the walk found a change: full path
    assert after != digest and after == _truth(stage)


@pytest.mark.parametrize("stage", ["globs"], indirect=True)  # every tracked file is "git"'s
def test_a_change_outside_the_globs_keeps_the_fast_path(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = stage.inputs().digest
    write(stage.root, ".gitignore", "build/\nother/\n")  # tracked, but matched by no glob
    spy = _Spy(monkeypatch)
    assert stage.inputs().digest == digest
    assert spy.listings == 0


def test_every_change_is_seen(stage: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    src = stage.root / "src"
    changes: list[tuple[str, Callable[[], object]]] = [
        ("tracked file edited", lambda: write(stage.root, "src/m01.py", "edited\n")),
        ("new untracked file", lambda: write(stage.root, "src/new.py")),
        ("untracked file now ignored", lambda: write(stage.root, ".git/info/exclude", "notes.txt")),
        ("ignored file added", lambda: write(stage.root, "src/build.log")),
        ("tracked file deleted", lambda: (src / "m02.py").unlink()),
        ("tracked file made executable", lambda: (src / "m03.py").chmod(0o755)),
        ("tracked file replaced by a link", lambda: _relink(src / "m04.py", "m05.py")),
        ("untracked file deleted", lambda: (stage.root / "src/new.py").unlink()),
        ("edited file edited again", lambda: write(stage.root, "src/m01.py", "edited twice\n")),
    ]
    write(stage.root, ".gitignore", "build/\n*.log\n")
    git(stage.root, "commit", "-qam", "ignore logs")
    digest = stage.inputs().digest
    for name, change in changes:
        spy = _Spy(monkeypatch)
        assert stage.inputs().digest == digest
        assert spy.listings == 0, name  # git vouched for what it could
        change()
        after = stage.inputs().digest
        assert after == _truth(stage), name
        # ignoring a file matters to "git" only; an ignored file, to globs only
        unseen = {"git": "ignored file added", "globs": "untracked file now ignored"}
        if unseen["git" if stage.spec.uses_git else "globs"] == name:
            assert after == digest, name
        else:
            assert after != digest, name
        digest = after


def _relink(path: Path, target: str) -> None:
    path.unlink()
    os.symlink(target, path)


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["none", "assume-unchanged", "skip-worktree", "lax settings"])
def test_an_edit_keeping_size_and_mtime_is_seen(
    stage: Stage, setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Git may compare times to the second: this needs the real racy margin, and files older
    # than it.
    if setting == "assume-unchanged":
        git(stage.root, "update-index", "--assume-unchanged", "src/m05.py")
    elif setting == "skip-worktree":
        git(stage.root, "update-index", "--skip-worktree", "src/m05.py")
    elif setting == "lax settings":
        git(stage.root, "config", "core.trustctime", "false")
        git(stage.root, "config", "core.checkStat", "minimal")
    time.sleep(RACY_MARGIN_NS / 1e9 + 0.1)
    stage = dataclasses.replace(stage, racy_margin_ns=None)
    digest = stage.inputs().digest
    spy = _Spy(monkeypatch)
    assert stage.inputs().digest == digest
    assert spy.listings == 0  # git vouches
    target = stage.root / "src" / "m05.py"
    info = target.stat()
    target.write_text(target.read_text().upper())
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    if setting != "none":
        assert _git_sees(stage.root) == []  # with the repository's settings, git is blind
    after = stage.inputs().digest
    assert after != digest
    assert after == _truth(stage)


def _git_sees(root: Path) -> list[str]:
    result = subprocess.run(
        ["git", "diff-files", "--name-only"], cwd=root, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_an_index_change_falls_back_and_records_again(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage.inputs()
    git(stage.root, "add", "notes.txt")  # the index changes
    spy = _Spy(monkeypatch)
    digest = stage.inputs().digest
    assert spy.listings == 1
    spy.listings = 0
    assert stage.inputs().digest == digest
    assert spy.listings == 0  # vouched for again
    assert digest == _truth(stage)


def test_variables_pointing_git_elsewhere_are_ignored(
    stage: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = stage.inputs().digest
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "empty-index"))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "nowhere"))
    assert stage.inputs().digest == digest
    assert stage.inputs().digest == digest


def test_plan_uses_the_fast_path_and_writes_nothing(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage.inputs()
    (stat_file,) = (stage.cache / "stat").iterdir()
    before = stat_file.stat().st_mtime_ns
    stage.read_only = True
    spy = _Spy(monkeypatch)
    stage.inputs()
    assert spy.listings == 0
    assert stat_file.stat().st_mtime_ns == before
