"""Targets a Makefile or justfile declares for build, lint and test (any language).

A target whose recipe rewrites files (`fixers`: ``black .``, ``pre-commit run``) is passed
over.
"""

from __future__ import annotations

import re

from codex_orchestrator.pipelines.diagnostics.checks import Run
from codex_orchestrator.pipelines.diagnostics.fixers import rewrites_files
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
# A recipe's body: the indented lines after its rule (tab-indented in a Makefile).
_MAKE_BODY = re.compile(r"[^\n]*\n((?:\t[^\n]*(?:\n|$)|[ \t]*(?:#[^\n]*)?\n)*)")
_JUST_BODY = re.compile(r"[^\n]*\n((?:[ \t]+[^\n]*(?:\n|$)|[ \t]*\n)*)")


class Declared:
    """The Makefile's and justfile's targets, and how to run one."""

    def __init__(self, repo: RepoFiles) -> None:
        self.makefile = repo.first_file(*MAKEFILES)
        self.justfile = repo.first_file(*JUSTFILES)
        self.make_targets = _targets(repo, self.makefile, _MAKE_TARGET, _MAKE_BODY)
        self.just_recipes = _targets(repo, self.justfile, _JUST_RECIPE, _JUST_BODY)

    def files(self) -> list[str]:
        """The declaring files found (Makefile, justfile)."""
        return [name for name in (self.makefile, self.justfile) if name]

    def check(self, stage_id: str, fallback: bool) -> Run | None:
        """The first target named for ``stage_id`` (``fallback``: also ``all`` for build)
        whose recipe rewrites no file."""
        for name in _names(stage_id, fallback):
            for file, recipes, tool, noun in self._declaring():
                if name in recipes and rewrites_files(recipes[name]) is None:
                    return Run(f"{tool} {name}", f"{file} declares the '{name}' {noun}", (tool,))
        return None

    def passed_over(self, stage_id: str, fallback: bool) -> list[str]:
        """The targets named for ``stage_id`` not chosen because their recipes rewrite files."""
        found = []
        for file, recipes, _tool, _noun in self._declaring():
            for name in _names(stage_id, fallback):
                fixer = rewrites_files(recipes.get(name, ""))
                if fixer is not None:
                    found.append(f"{file} '{name}' runs {fixer}, which rewrites files")
        return found

    def looked_for(self, stage_id: str, fallback: bool) -> str:
        """What `check` looked for, for a skip reason."""
        quoted = "/".join(f"'{name}'" for name in _names(stage_id, fallback))
        return f"no Makefile/justfile {quoted} target"

    def _declaring(self) -> tuple[tuple[str | None, dict[str, str], str, str], ...]:
        return (
            (self.makefile, self.make_targets, "make", "target"),
            (self.justfile, self.just_recipes, "just", "recipe"),
        )


def _names(stage_id: str, fallback: bool) -> tuple[str, ...]:
    """Target names tried for ``stage_id``, in order (``fallback``: also ``all`` for build)."""
    return TARGETS.get(stage_id, ()) + (FALLBACK_TARGETS.get(stage_id, ()) if fallback else ())


def _targets(
    repo: RepoFiles, name: str | None, rule: re.Pattern[str], body: re.Pattern[str]
) -> dict[str, str]:
    """Each target (recipe) in file ``name`` with its recipe's text (the first rule's)."""
    if name is None:
        return {}
    text = repo.text(name)
    targets: dict[str, str] = {}
    for match in rule.finditer(text):
        recipe = body.match(text, match.end())
        targets.setdefault(match.group(1), recipe.group(1) if recipe else "")
    return targets
