"""One cache directory shared by two git worktrees of a repository: entries hold paths relative
to the root, so a hit in one worktree is valid in the other on the same inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.cache.store import Hit, Miss

from .cache_kit import Stage, write
from .gitrepo import git


@pytest.fixture
def worktrees(tmp_path: Path) -> tuple[Path, Path]:
    main = tmp_path / "main"
    main.mkdir()
    git(main, "init", "-q", "-b", "main")
    write(main, ".gitignore", "build/\n")
    write(main, "src/app.py", "print('app')\n")
    write(main, "tests/test_app.py", "def test(): pass\n")
    git(main, "add", "-A")
    git(main, "commit", "-q", "-m", "init")
    second = tmp_path / "second"
    git(main, "worktree", "add", "-q", str(second), "-b", "agent-2")
    return main, second


@pytest.mark.parametrize("inputs", ["git", ("src/**", "tests/**")])
def test_a_hit_in_one_worktree_is_valid_in_another(
    worktrees: tuple[Path, Path], tmp_path: Path, inputs: object
) -> None:
    main, second = worktrees
    shared = tmp_path / "shared-cache"
    spec = CacheSpec(inputs=inputs, outputs=("build/report.txt",))  # type: ignore[arg-type]
    first, other = Stage(main, shared, spec), Stage(second, shared, spec)
    write(main, "build/report.txt", "made in main\n")
    assert first.store("run-main") == "stored"

    found = other.lookup()
    assert isinstance(found, Hit) and found.from_run == "run-main"
    restored = other.store_handle().restore(
        found, stdout=tmp_path / "out.log", stderr=tmp_path / "err.log"
    )
    assert restored == ("build/report.txt",)
    assert (second / "build/report.txt").read_text() == "made in main\n"
    assert (tmp_path / "out.log").read_text() == "all passed\n"
    assert len(list((shared / "stat").iterdir())) == 2  # inode numbers differ: one per root

    write(second, "src/app.py", "print('changed in the second worktree')\n")
    found = other.lookup()
    assert isinstance(found, Miss) and found.reason == "src/app.py modified"
    assert isinstance(first.lookup(), Hit)  # the first worktree is unchanged
