"""Targets a Makefile or justfile declares for build, lint and test (any language)."""

from __future__ import annotations

import re

from codex_orchestrator.pipelines.diagnostics.checks import Run
from codex_orchestrator.pipelines.diagnostics.repo import RepoFiles

MAKEFILES = ("GNUmakefile", "makefile", "Makefile")
JUSTFILES = ("justfile", "Justfile", ".justfile")
#: Target names tried for each stage, in order. ``all`` counts as a build only in a
#: repository with no other project kind (elsewhere it often runs everything).
TARGETS = {"build": ("build",), "lint": ("lint",), "test": ("test", "check")}
FALLBACK_TARGETS = {"build": ("all",)}
# A rule ``name:`` or ``name::``, not a variable (``name := …``, ``name ::= …``).
_MAKE_TARGET = re.compile(r"^([A-Za-z0-9][\w.-]*)[ \t]*::?(?![:=])", re.MULTILINE)
# A recipe ``name:`` or ``name arg='x':``, possibly quiet (``@name:``); not ``set x := …``.
_JUST_RECIPE = re.compile(r"^@?([A-Za-z_][\w-]*)(?:[ \t]+[^:\n]*)?[ \t]*:(?!=)", re.MULTILINE)


class Declared:
    """The Makefile's and justfile's targets, and how to run one."""

    def __init__(self, repo: RepoFiles) -> None:
        self.makefile = repo.first_file(*MAKEFILES)
        self.justfile = repo.first_file(*JUSTFILES)
        self.make_targets = _targets(repo, self.makefile, _MAKE_TARGET)
        self.just_recipes = _targets(repo, self.justfile, _JUST_RECIPE)

    def files(self) -> list[str]:
        """The declaring files found (Makefile, justfile)."""
        return [name for name in (self.makefile, self.justfile) if name]

    def check(self, stage_id: str, fallback: bool) -> Run | None:
        """The first target named for ``stage_id`` (``fallback``: also ``all`` for build)."""
        names = TARGETS.get(stage_id, ()) + (FALLBACK_TARGETS.get(stage_id, ()) if fallback else ())
        for name in names:
            if name in self.make_targets:
                why = f"{self.makefile} declares the '{name}' target"
                return Run(f"make {name}", why, ("make",))
            if name in self.just_recipes:
                why = f"{self.justfile} declares the '{name}' recipe"
                return Run(f"just {name}", why, ("just",))
        return None

    def looked_for(self, stage_id: str, fallback: bool) -> str:
        """What `check` looked for, for a skip reason."""
        names = TARGETS.get(stage_id, ()) + (FALLBACK_TARGETS.get(stage_id, ()) if fallback else ())
        quoted = "/".join(f"'{name}'" for name in names)
        return f"no Makefile/justfile {quoted} target"


def _targets(repo: RepoFiles, name: str | None, pattern: re.Pattern[str]) -> frozenset[str]:
    if name is None:
        return frozenset()
    return frozenset(pattern.findall(repo.text(name)))
