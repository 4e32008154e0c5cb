"""A cache hit's chain across the git worktrees of one repository (they may share a cache dir):
a run not found here is looked for in the other worktrees' runs directories, with the same
checks, and never through a link out of a worktree. Real git worktrees; the manifests are
written by hand so that each can be tampered with (tests/test_cache_run.py runs the real thing).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.evidence.cache_chain import CacheChains, Proof
from codex_orchestrator.records.workspace import RUNS_ENV, Workspace

from .helpers import git, git_repo, write_manifest

TASK = "0100-cache"
KEY = "sha256:" + "a" * 64


def _stage(status: str = "succeeded", key: str = KEY) -> dict[str, Any]:
    field = {"status": "miss", "key": key, "reason": "no entry"}
    exit_code = 0 if status == "succeeded" else 1
    return {"index": 0, "id": "test", "status": status, "exit_code": exit_code, "cache": field}


def _hit(run_id: str) -> dict[str, Any]:
    field = {"status": "hit", "key": KEY, "reason": None, "from_run": run_id, "from_task": TASK}
    return {"index": 0, "id": "test", "status": "succeeded", "exit_code": 0, "cache": field}


def _served_from(run_id: str) -> dict[str, Any]:
    """The manifest of a run whose one stage was a hit from ``run_id``."""
    return {"run_id": "served", "commands": [_hit(run_id)]}


def _ran(root: Path, run_id: str, stage: dict[str, Any] | None = None) -> Path:
    relative = write_manifest(root, TASK, run_id, commands=[stage or _stage()])
    return root / relative


class Trees:
    """A repository and a second worktree of it; chains are followed from the first."""

    def __init__(self, tmp_path: Path) -> None:
        self.main = git_repo(Path(os.path.realpath(tmp_path)) / "main")
        self.second = self.main.parent / "second"
        git(self.main, "worktree", "add", "-q", str(self.second))

    def follow(self, run_id: str, below: str = "") -> tuple[tuple[Proof, ...], str | None]:
        root = self.main / below
        workspace = Workspace(root, root / ".runs", root / "out")
        chain = CacheChains(workspace).follow(_served_from(run_id))
        return chain.proofs, chain.broken


@pytest.fixture
def trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Trees:
    monkeypatch.setenv(RUNS_ENV, ".runs")  # as the CLI tests run
    return Trees(tmp_path)


@pytest.mark.parametrize("below", ["", "app"])
def test_the_run_that_stored_a_hit_is_found_in_another_worktree(trees: Trees, below: str) -> None:
    """A root in a subdirectory of the worktree maps to that subdirectory of the other."""
    (trees.main / below).mkdir(exist_ok=True)
    manifest = _ran(trees.second / below, "run-there")
    proofs, broken = trees.follow("run-there", below)
    assert broken is None
    assert proofs == (Proof("test", "run-there", manifest, trees.second / below),)


def test_a_chain_may_cross_worktrees_and_come_back(trees: Trees) -> None:
    _ran(trees.second, "run-there", _hit("run-here"))
    manifest = _ran(trees.main, "run-here")
    proofs, broken = trees.follow("run-there")
    assert broken is None and proofs == (Proof("test", "run-here", manifest, None),)


@pytest.mark.parametrize(
    ("stage", "why"),
    [
        (_stage(status="failed"), "run run-there did not succeed in stage test"),
        (
            _stage(key="sha256:" + "b" * 64),
            "run run-there ran stage test on other inputs (another cache key)",
        ),
        (_stage() | {"id": "lint"}, "run run-there has no stage test"),
        (_hit("run-there"), "more than 16 runs in a row name one another"),
    ],
)
def test_a_run_of_another_worktree_is_checked_as_one_here(
    trees: Trees, stage: dict[str, Any], why: str
) -> None:
    _ran(trees.second, "run-there", stage)
    proofs, broken = trees.follow("run-there")
    assert proofs == () and broken == f"stage test was served from the stage cache: {why}"


def test_a_run_nowhere_says_where_it_was_looked_for(trees: Trees) -> None:
    gone = "stage test was served from the stage cache: run run-x, which ran it, no longer exists"
    assert trees.follow("run-x")[1] == (
        f"{gone} (looked in .runs and in the other worktrees' {trees.second / '.runs'})"
    )
    shutil.rmtree(trees.second)  # git still lists it
    assert trees.follow("run-x")[1] == (
        f"{gone} (looked in .runs and in no other worktree; "
        f"not looked in: {trees.second} (no such directory))"
    )
    git(trees.main, "worktree", "prune")
    assert (
        trees.follow("run-x")[1]
        == f"{gone} (looked in .runs and in no other worktree (git lists none))"
    )


def test_not_a_git_repository_looks_only_here(tmp_path: Path) -> None:
    root = Path(os.path.realpath(tmp_path))
    workspace = Workspace(root, root / ".runs", root / "out")
    broken = CacheChains(workspace).follow(_served_from("run-x")).broken
    assert broken is not None
    assert broken.endswith("(looked in .runs and in no other worktree (not in a git repository))")


@pytest.mark.parametrize("link", [".runs", f".runs/{TASK}/cli/run-there"])
def test_a_link_out_of_another_worktree_is_never_followed(
    trees: Trees, tmp_path: Path, link: str
) -> None:
    outside = tmp_path / "outside"
    _ran(outside, "run-there")  # a whole run, genuine in every way but where it is
    target = outside / ".runs" if link == ".runs" else outside / link
    (trees.second / link).parent.mkdir(parents=True, exist_ok=True)
    (trees.second / link).symlink_to(target)
    proofs, broken = trees.follow("run-there")
    assert proofs == () and broken is not None
    assert "which ran it, no longer exists" in broken
    assert "a link out of that worktree: not followed" in broken
