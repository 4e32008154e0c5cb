"""The runs of the repository's other git worktrees: where a shared stage cache's hit may lead.

Worktrees of one repository may share a cache directory (``cache_dir``); a hit served in one
names the run that stored the entry, in the runs directory of another. `OtherWorktrees` finds
such a run: it asks git for the worktrees (``git worktree list``, once, and only when a run is
not found here: a command that never needs it starts no git), and looks in each one's runs
directory, placed there as it is here (the same relative ``CODEX_ORCHESTRATOR_RUNS_DIR``, else
that worktree's default layout). A root set in a subdirectory of a worktree maps to the same
subdirectory of the others. Nothing of another worktree is reached through a link that leaves
it: its runs directory and the run's directory must resolve inside it (`Workspace`'s rules),
and the manifest is read without following any link.

Git finds the repository from the root, with the variables that would point it elsewhere
dropped (as for the cache's own git calls).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NamedTuple

from codex_orchestrator.errors import OutsideRootError
from codex_orchestrator.records.layout import default_state_roots
from codex_orchestrator.records.workspace import RUNS_ENV, Workspace
from codex_orchestrator.util.safefs import resolve_within

#: ``git worktree list`` reads a few small files; past this it is not answering.
GIT_TIMEOUT_SECONDS = 30.0
#: How many other runs directories a message names before it counts the rest.
_NAMED = 3
_LINK_OUT = "a link out of that worktree: not followed"


class FoundRun(NamedTuple):
    """A run found in another worktree: its directory and that worktree's root."""

    run_dir: Path
    worktree: Path


class OtherWorktrees:
    """The runs directories of the repository's other worktrees, listed on first use."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._listed: list[Workspace] | None = None
        self._unseen: list[str] = []  # worktrees not looked in, and why
        self._refused: list[str] = []  # the last run looked for, where a link led out
        self._why_none = ""

    def find_run(self, run_id: str, task: str | None) -> FoundRun | None:
        """The run ``run_id`` (of ``task`` first, then of any task) in another worktree."""
        self._refused = []
        for other in self._workspaces():
            try:
                found = other.find_run(run_id, task) or other.find_run(run_id)
            except OutsideRootError:
                self._refused.append(f"run {run_id} in {other.runs_dir} ({_LINK_OUT})")
                continue
            if found is not None:
                return FoundRun(found[1], other.root)
        return None

    def looked_in(self) -> str:
        """Where the last `find_run` looked, for a message: the other worktrees' runs
        directories, and where it could not look, and why."""
        workspaces = self._workspaces()
        unseen = [*self._unseen, *self._refused]
        if not workspaces and not unseen:
            return f"no other worktree ({self._why_none})"
        named = [str(other.runs_dir) for other in workspaces[:_NAMED]]
        if len(workspaces) > _NAMED:
            named.append(f"{len(workspaces) - _NAMED} more")
        text = "the other worktrees' " + ", ".join(named) if named else "no other worktree"
        if unseen:
            text += "; not looked in: " + ", ".join(unseen)
        return text

    def _workspaces(self) -> list[Workspace]:
        if self._listed is None:
            self._listed = []
            for root in self._other_roots():
                try:
                    self._listed.append(_workspace_of(root))
                except OutsideRootError:
                    self._unseen.append(f"the runs directory of {root} ({_LINK_OUT})")
                except OSError:
                    self._unseen.append(f"{root} (no such directory)")
        return self._listed

    def _other_roots(self) -> list[Path]:
        """The root of each other worktree: the same subdirectory of it as the root is here."""
        root = self.workspace.root
        if os.path.isabs(os.environ.get(RUNS_ENV, "").strip()):
            self._why_none = f"{RUNS_ENV} names one runs directory for all of them"
            return []
        listed = _worktrees(root)
        if isinstance(listed, str):
            self._why_none = listed
            return []
        own = max(
            (tree for tree in listed if tree == root or tree in root.parents),
            key=lambda tree: len(tree.parts),
            default=None,
        )
        if own is None:
            self._why_none = f"git lists none holding {root}"
            return []
        below = root.relative_to(own)
        others = [tree / below for tree in listed if tree != own]
        self._why_none = "git lists none"
        return list(dict.fromkeys(others))


def _workspace_of(root: Path) -> Workspace:
    """The runs root of worktree ``root`` as this process would find it there, kept inside it
    (`OutsideRootError` for a link out); `OSError` when ``root`` is gone. Only its runs are
    read: the workspace's out root is its runs root."""
    # removed without git's knowledge, or the root's subdirectory is not there
    if not root.is_dir():
        raise FileNotFoundError(root)
    relative = os.environ.get(RUNS_ENV, "").strip() or default_state_roots(root)[0]
    fix = "the tool never reads another worktree's records through a link"
    runs = resolve_within(root / relative, root, str(root / relative), fix)
    return Workspace(root, runs, runs)


def _worktrees(root: Path) -> list[Path] | str:
    """The real roots of the repository's worktrees (bare entries left out), or why not."""
    from codex_orchestrator.cache.gitfiles import git_environment

    try:
        listed = subprocess.run(
            ["git", "worktree", "list", "--porcelain", "-z"],
            cwd=root,
            env=git_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        return "git is not installed"
    except subprocess.TimeoutExpired:
        return f"git worktree list took more than {GIT_TIMEOUT_SECONDS:g} s"
    except OSError as error:
        return f"cannot run git ({error.strerror})"
    if listed.returncode != 0:
        return "not in a git repository"
    trees: list[Path] = []
    # Records end with an empty field; within one, "worktree PATH" comes first, "bare" after.
    for record in os.fsdecode(listed.stdout).split("\0\0"):
        fields = record.strip("\0").split("\0")
        if fields[0].startswith("worktree ") and "bare" not in fields[1:]:
            trees.append(Path(os.path.realpath(fields[0].removeprefix("worktree "))))
    return trees
