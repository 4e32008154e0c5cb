"""Node.js projects: the ``build``/``lint``/``test`` scripts of ``package.json``, run with the
package manager its lock file (else its ``packageManager`` field) names."""

from __future__ import annotations

import json
from typing import Any

from codex_orchestrator.pipelines.diagnostics.checks import (
    CHECKED_STAGES,
    Check,
    Project,
    Run,
    Skip,
    broken_project,
)
from codex_orchestrator.pipelines.diagnostics.repo import RepoFiles

LOCK_FILES = (
    ("pnpm-lock.yaml", "pnpm"),
    ("yarn.lock", "yarn"),
    ("bun.lockb", "bun"),
    ("bun.lock", "bun"),
    ("package-lock.json", "npm"),
    ("npm-shrinkwrap.json", "npm"),
)
MANAGERS = ("npm", "pnpm", "yarn", "bun")
NPM_TEST_PLACEHOLDER = "no test specified"


def detect(repo: RepoFiles) -> Project | None:
    """The Node.js project at the root (a ``package.json``), or None."""
    text, problem = repo.read("package.json")
    if text is None:
        return None if problem is None else broken_project("Node.js", "package.json", problem)
    manifest, problem = _parse(text)
    if manifest is None:
        return broken_project("Node.js", "package.json", problem or "package.json is unusable")
    scripts = manifest.get("scripts") or {}
    manager, source = _manager(repo, manifest)
    checks: dict[str, Check] = {
        name: _script(scripts, name, manager, source) for name in CHECKED_STAGES
    }
    return Project("Node.js", f"package.json, {manager}: {source}", checks)


def _parse(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The package.json object, or None and what is wrong with it."""
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as error:
        return None, f"package.json is not valid JSON ({error}); fix the file"
    if not isinstance(manifest, dict):
        return None, "package.json is not a JSON object; fix the file"
    if not isinstance(manifest.get("scripts", {}), dict):
        return None, "package.json 'scripts' is not an object; fix the file"
    return manifest, None


def _manager(repo: RepoFiles, manifest: dict[str, Any]) -> tuple[str, str]:
    """The package manager and what chose it."""
    for lock, manager in LOCK_FILES:
        if repo.has_file(lock):
            return manager, lock
    declared = manifest.get("packageManager")
    if isinstance(declared, str) and declared.split("@", 1)[0] in MANAGERS:
        return declared.split("@", 1)[0], f"packageManager {declared}"
    return "npm", "no lock file"


def _script(scripts: dict[str, Any], name: str, manager: str, source: str) -> Check:
    script = scripts.get(name)
    if not isinstance(script, str) or not script.strip():
        return Skip(f"skipped: package.json has no '{name}' script")
    if name == "test" and NPM_TEST_PLACEHOLDER in script:
        return Skip("skipped: package.json 'test' script is npm's 'no test specified' placeholder")
    why = f"package.json script '{name}' ({script.strip()[:80]}), run with {manager} ({source})"
    return Run(f"{manager} run {name}", why, (manager,))
