"""Runs cited as evidence by checklist mirrors, so that ``prune`` never deletes them.

Every mirror counts, whichever task it belongs to: the per-task templates (``tasks/tasks-*.md``
and the like, found by globbing, with or without ``tasks/index.json``), the shared files
(``docs/TASKS.md``), and the checklist paths that index entries name. A cited run is the run
directory holding a cited ``manifest.json`` path.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from codex_orchestrator.errors import UsageError
from codex_orchestrator.evidence.checklist import parse
from codex_orchestrator.evidence.mirrors import MIRROR_PATH_KEYS, PLACEHOLDER, mirror_templates
from codex_orchestrator.evidence.taskindex import load_index
from codex_orchestrator.util.ids import RUN_ID_PATTERN
from codex_orchestrator.util.safefs import TEXT_SIZE_LIMIT, UnreadableFileError, read_regular


def mirror_files(root: Path) -> list[Path]:
    """Every checklist mirror file present in the repository."""
    found: set[Path] = set()
    for template in mirror_templates(root):
        if PLACEHOLDER in template:
            found.update(root.glob(template.replace(PLACEHOLDER, "*")))
        else:
            found.add(root / template)
    index = load_index(root)
    for entry in index.entries if index else ():
        for key in MIRROR_PATH_KEYS:
            path = entry.paths.get(key)
            if (
                path
                and not PurePosixPath(path).is_absolute()
                and ".." not in PurePosixPath(path).parts
            ):
                found.add(root / path)
    return sorted(path for path in found if path.exists())


def cited_runs(root: Path) -> dict[str, str]:
    """Run ids cited as evidence, each with the first mirror (relative path) that cites it.

    A mirror that exists but cannot be read is an error (`UsageError`): pruning without it
    could delete a cited run.
    """
    cited: dict[str, str] = {}
    for path in mirror_files(root):
        shown = path.relative_to(root).as_posix()
        try:
            checklist = parse(read_regular(path, TEXT_SIZE_LIMIT))
        except (OSError, UnreadableFileError) as error:
            raise UsageError(
                f"{shown}: cannot read this checklist mirror ({error}); fix it, or pass "
                "--include-evidence to prune without looking at evidence"
            ) from None
        for item in checklist.items:
            for evidence in item.evidence:
                run_id = PurePosixPath(evidence).parent.name
                if RUN_ID_PATTERN.fullmatch(run_id):
                    cited.setdefault(run_id, shown)
    return cited
