"""Spec guard: code changes must come with spec changes, and specs must be reviewed recently.

Changes are those since a base revision — ``--base REF``, else the merge base of HEAD with the
first of ``main``, ``master``, ``origin/main``, ``origin/HEAD`` that exists, else the first
commit — plus uncommitted and untracked files of the working tree. A change to code (under
``src/``, ``app/`` or ``server/``, or any ``migrations`` directory) needs a change under
``tasks/specs/`` or to ``tasks/index.json``. Every ``tasks/specs/*.md`` must carry a line
``last_review: YYYY-MM-DD`` no older than `MAX_REVIEW_AGE_DAYS`.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any

from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.pipelines.model import INDEX_PATH
from codex_orchestrator.util.safefs import TEXT_SIZE_LIMIT, read_inside

MAX_REVIEW_AGE_DAYS = 30
MAIN_BRANCHES = ("main", "master", "origin/main", "origin/HEAD")
CODE_ROOTS = frozenset({"src", "app", "server"})
SPECS_DIR = "tasks/specs"
REVIEW_KEY = "last_review"
_WORD = re.compile(r"\w")
_NON_WORDS = re.compile(r"\W*")
_DATE = re.compile(r"['\"]?(\d{4}-\d{2}-\d{2})['\"]?")


@dataclass(frozen=True)
class Finding:
    """One reason the guard fails: a kind, the path concerned and a message."""

    kind: str
    path: str | None
    message: str


@dataclass
class GuardReport:
    """The outcome: the base compared against, changed files by class, findings."""

    base: str | None
    base_ref: str
    changed_code: list[str] = field(default_factory=list)
    changed_specs: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no finding."""
        return not self.findings

    def as_json(self) -> dict[str, Any]:
        """The report as one JSON object."""
        return {
            "findings": [asdict(finding) for finding in self.findings],
            "base": self.base,
            "base_ref": self.base_ref,
            "changed_code": self.changed_code,
            "changed_specs": self.changed_specs,
            "ok": self.ok,
        }


def guard(root: Path, base: str | None = None, today: date | None = None) -> GuardReport:
    """Check the repository at ``root`` against ``base`` (default: see the module docstring)."""
    if _try_git(root, "rev-parse", "--is-inside-work-tree") != "true\n":
        raise OrchestratorError(f"{root} is not a git work tree; spec-guard compares git revisions")
    commit, ref = _resolve_base(root, base)
    changed = _changed_paths(root, commit)
    report = GuardReport(commit, ref)
    report.changed_code = [path for path in changed if is_code(path)]
    report.changed_specs = [path for path in changed if is_spec(path)]
    if report.changed_code and not report.changed_specs:
        shown = ", ".join(report.changed_code[:5]) + (
            " ..." if len(report.changed_code) > 5 else ""
        )
        report.findings.append(
            Finding(
                "code-without-spec",
                None,
                f"{len(report.changed_code)} code file(s) changed since {ref} ({shown}) with no "
                f"change under {SPECS_DIR}/ or to {INDEX_PATH}; update the task's spec",
            )
        )
    report.findings.extend(stale_specs(root, today or date.today()))
    return report


def is_code(path: str) -> bool:
    """True for a path under ``src/``, ``app/``, ``server/`` or a ``migrations`` directory."""
    parts = PurePosixPath(path).parts
    return len(parts) > 1 and (parts[0] in CODE_ROOTS or "migrations" in parts[:-1])


def is_spec(path: str) -> bool:
    """True for a path under ``tasks/specs/`` or ``tasks/index.json`` itself."""
    return path == INDEX_PATH or path.startswith(f"{SPECS_DIR}/")


def stale_specs(root: Path, today: date) -> list[Finding]:
    """Specs whose ``last_review`` is missing, malformed or older than the limit."""
    findings = []
    for spec in sorted((root / SPECS_DIR).glob("*.md")):
        path = f"{SPECS_DIR}/{spec.name}"
        try:
            text = read_inside(root, path, TEXT_SIZE_LIMIT).decode("utf-8", "replace")
        except OSError as error:
            findings.append(
                Finding("spec-unreadable", path, f"{path}: cannot read ({error.strerror})")
            )
            continue
        finding = _review_finding(path, text, today)
        if finding is not None:
            findings.append(finding)
    return findings


def review_value(text: str) -> str | None:
    """The value of the first line ``last_review: VALUE`` (any punctuation or markup may come
    before the key and between it and the colon, as in ``- **last_review**: ...``).

    Line by line with anchored matches only, so a huge line costs linear time.
    """
    for line in text.split("\n"):
        start = line.find(REVIEW_KEY)
        if start < 0 or _WORD.search(line, 0, start):
            continue
        after = start + len(REVIEW_KEY)
        run = _NON_WORDS.match(line, after)
        colon = line.rfind(":", after, run.end() if run else after)
        if colon >= 0:
            return line[colon + 1 :].strip()
    return None


def _review_finding(path: str, text: str, today: date) -> Finding | None:
    value = review_value(text)
    fix = f"add a line 'last_review: {today.isoformat()}' after reviewing it"
    if value is None:
        return Finding("review-missing", path, f"{path}: no last_review date; {fix}")
    match = _DATE.fullmatch(value)
    try:
        reviewed = date.fromisoformat(match.group(1)) if match else None
    except ValueError:
        reviewed = None
    if reviewed is None:
        return Finding(
            "review-malformed",
            path,
            f"{path}: last_review {value!r} is not a YYYY-MM-DD date; {fix}",
        )
    age = (today - reviewed).days
    if age > MAX_REVIEW_AGE_DAYS:
        return Finding(
            "review-stale",
            path,
            f"{path}: last_review {reviewed.isoformat()} is {age} days old (limit "
            f"{MAX_REVIEW_AGE_DAYS}); review the spec and update its date",
        )
    return None


def _resolve_base(root: Path, base: str | None) -> tuple[str | None, str]:
    """The base commit and a description of where it came from."""
    if base is not None:
        if base.startswith("-"):
            raise OrchestratorError(
                f"--base {base!r}: not a git revision; give a branch, tag or commit"
            )
        what = f"--base {base!r}: unknown git revision; give a branch, tag or commit"
        return _git(
            root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", what=what
        ).strip(), base
    if _try_git(root, "rev-parse", "--verify", "--quiet", "HEAD") is None:
        return None, "an empty repository"
    for branch in MAIN_BRANCHES:
        if _try_git(root, "rev-parse", "--verify", "--quiet", f"{branch}^{{commit}}") is not None:
            merge_base = _try_git(root, "merge-base", "HEAD", branch)
            if merge_base:
                return merge_base.strip(), f"the merge base with {branch}"
    roots = _git(root, "rev-list", "--max-parents=0", "HEAD", what="cannot list the first commit")
    return roots.splitlines()[-1], "the first commit"


def _changed_paths(root: Path, commit: str | None) -> list[str]:
    """Paths (relative to ``root``) changed since ``commit``, uncommitted and untracked included."""
    what = "cannot list changed files"
    if commit is None:
        tracked = _git(root, "ls-files", "-z", "--cached", what=what)
    else:
        tracked = _git(
            root, "diff", "--name-only", "--no-renames", "--relative", "-z", commit, what=what
        )
    untracked = _git(root, "ls-files", "-z", "--others", "--exclude-standard", what=what)
    paths = {path for path in (tracked + "\0" + untracked).split("\0") if path}
    return sorted(paths)


def _git(root: Path, *args: str, what: str) -> str:
    """Run git in ``root``; its stdout, or `OrchestratorError` with ``what``."""
    output = _try_git(root, *args)
    if output is None:
        raise OrchestratorError(what)
    return output


def _try_git(root: Path, *args: str) -> str | None:
    """Run git in ``root``; its stdout, or None when it fails."""
    try:
        completed = subprocess.run(
            ["git", *args],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
            encoding="utf-8",
            errors="surrogateescape",
        )
    except OSError as error:
        raise OrchestratorError(
            f"cannot run git ({error.strerror}); install git to use spec-guard"
        ) from None
    return completed.stdout if completed.returncode == 0 else None
