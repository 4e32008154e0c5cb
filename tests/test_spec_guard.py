"""``spec-guard``: code changes need spec changes; specs need a recent ``last_review``."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from codex_orchestrator.evidence.spec_guard import is_code, is_spec
from evidence.helpers import assert_usage_error, cli, cli_json, commit_all, git, git_repo, write

TODAY = date.today()
FRESH = f"---\nlast_review: {TODAY.isoformat()}\n---\n# Spec\n"


def _repo(tmp_path: Path, branch: str = "main") -> Path:
    root = git_repo(tmp_path / "repo", branch)
    write(root, "tasks/specs/0001-a.md", FRESH)
    write(root, "src/app.py", "x = 1\n")
    commit_all(root, "base")
    return root


def test_path_classes() -> None:
    assert is_code("src/a.py") and is_code("app/x/y.ts") and is_code("server/z.go")
    assert is_code("db/migrations/001.sql") and is_code("migrations/002.sql")
    assert not is_code("docs/src.md") and not is_code("src") and not is_code("lib/migrations")
    assert is_spec("tasks/specs/a.md") and is_spec("tasks/index.json")
    assert not is_spec("tasks/tasks-a.md")


def test_clean_repository_passes(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    result = cli(root, "spec-guard")
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1].startswith("spec-guard: passed")


@pytest.mark.slow
def test_code_change_without_spec_change_fails(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    git(root, "checkout", "-q", "-b", "feature")
    write(root, "src/app.py", "x = 2\n")
    commit_all(root)
    write(root, "db/migrations/002.sql", "-- untracked\n")
    code, document = cli_json(root, "spec-guard")
    assert code == 1
    assert document["ok"] is False
    assert document["changed_code"] == ["db/migrations/002.sql", "src/app.py"]
    assert document["changed_specs"] == []
    assert document["base"] == git(root, "rev-parse", "main").strip()
    assert [finding["kind"] for finding in document["findings"]] == ["code-without-spec"]

    dry = cli(root, "spec-guard", "--dry-run")
    assert dry.returncode == 0
    assert "code file(s) changed since the merge base with main" in dry.stdout
    assert "dry run" in dry.stdout.splitlines()[-1]

    write(root, "tasks/index.json", '{"items": []}\n')
    assert cli(root, "spec-guard").returncode == 0


def test_uncommitted_spec_change_counts(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    write(root, "app/main.ts", "export {}\n")
    write(root, "tasks/specs/0001-a.md", FRESH + "more\n")
    code, document = cli_json(root, "spec-guard")
    assert code == 0, document
    assert document["changed_code"] == ["app/main.ts"]
    assert document["changed_specs"] == ["tasks/specs/0001-a.md"]


def test_explicit_base_and_bad_base(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    first = git(root, "rev-list", "--max-parents=0", "HEAD").strip()
    code, document = cli_json(root, "spec-guard", "--base", first)
    assert code == 0 and document["base"] == first
    assert "src/app.py" in document["changed_code"]
    assert_usage_error(cli(root, "spec-guard", "--base", "no-such-ref"), "no-such-ref")
    assert_usage_error(cli(root, "spec-guard", "--base=--output=x"), "not a git revision")


def test_without_a_main_branch_the_first_commit_is_the_base(tmp_path: Path) -> None:
    root = _repo(tmp_path, branch="trunk")
    write(root, "server/api.py", "y = 1\n")
    commit_all(root)
    code, document = cli_json(root, "spec-guard")
    first = git(root, "rev-list", "--max-parents=0", "HEAD").strip()
    assert (code, document["base"], document["base_ref"]) == (0, first, "the first commit")
    assert document["changed_code"] == ["server/api.py", "src/app.py"]
    assert document["changed_specs"] == ["tasks/specs/0001-a.md"]


def test_review_dates(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    old = (TODAY - timedelta(days=31)).isoformat()
    edge = (TODAY - timedelta(days=30)).isoformat()
    write(root, "tasks/specs/stale.md", f"last_review: {old}\n")
    write(root, "tasks/specs/edge.md", f"- **last_review**: '{edge}'\n")
    write(root, "tasks/specs/missing.md", "# no date\n")
    write(root, "tasks/specs/malformed.md", "last_review: 2025-13-45\n")
    write(root, "tasks/specs/nested/ignored.md", "# not a direct child\n")
    code, document = cli_json(root, "spec-guard")
    assert code == 1
    found = {(finding["kind"], finding["path"]) for finding in document["findings"]}
    assert found == {
        ("review-stale", "tasks/specs/stale.md"),
        ("review-missing", "tasks/specs/missing.md"),
        ("review-malformed", "tasks/specs/malformed.md"),
    }
    stale = next(f for f in document["findings"] if f["kind"] == "review-stale")
    assert "31 days old" in stale["message"]


def test_not_a_git_repository(tmp_path: Path) -> None:
    assert_usage_error(cli(tmp_path, "spec-guard"), "not a git work tree")
    code, document = cli_json(tmp_path, "spec-guard")
    assert code == 2 and "not a git work tree" in document["error"]


def test_repository_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, "src/a.py", "")
    code, document = cli_json(root, "spec-guard")
    assert (code, document["base"], document["changed_code"]) == (1, None, ["src/a.py"])
