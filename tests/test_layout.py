"""Where the tool finds the repository and keeps its state, with no variable to help it: the
root found from a subfolder (nearest ``codex.orchestrator.json``, else ``.git``), one
tool-named state directory in a new repository, the old ``.runs``/``out`` layout still used
where it exists, and git (real ``git status`` and ``git add -A``) seeing none of it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from codex_orchestrator.records.layout import IGNORE_FILE, TOOL_DIR
from conftest import GIT_IDENTITY, Repo, run_cli

OK_STAGE = {"id": "ok", "command": "echo fine"}
LOCATING = ("CODEX_ORCHESTRATOR_ROOT", "CODEX_ORCHESTRATOR_RUNS_DIR", "CODEX_ORCHESTRATOR_OUT_DIR")


def _cli(repo: Repo, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI run in ``cwd`` as a user runs it: no variable names the root or state."""
    env = {key: value for key, value in repo.env.items() if key not in LOCATING}
    return run_cli(cwd, *args, env=env)


def _git(repo: Repo, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo.root, capture_output=True, text=True, check=True)
    return done.stdout


def _commit_config(repo: Repo) -> None:
    _git(repo, "add", "codex.orchestrator.json")
    _git(repo, *GIT_IDENTITY, "commit", "-q", "-m", "config")


def _subdir(repo: Repo) -> Path:
    subdir = repo.root / "sub" / "dir"
    subdir.mkdir(parents=True)
    return subdir


@pytest.mark.slow
def test_a_run_from_a_subfolder_uses_the_repository_config_and_records(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    _git(repo, "add", "codex.orchestrator.json")
    subdir = _subdir(repo)
    started = _cli(repo, subdir, "start", "--format", "json")
    assert started.returncode == 0, started.stderr
    document = json.loads(started.stdout)
    assert document["manifest"].startswith(f"{TOOL_DIR}/runs/default/cli/")
    assert (repo.root / document["manifest"]).is_file()
    assert not (subdir / TOOL_DIR).exists()
    # status and runs from the same subfolder see the run; status with no RUN takes the newest
    status = _cli(repo, subdir, "status", "--format", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["run_id"] == document["run_id"]
    listed = _cli(repo, subdir, "runs", "--format", "json")
    assert [row["run_id"] for row in json.loads(listed.stdout)["runs"]] == [document["run_id"]]


def test_the_nearest_config_wins_over_the_git_directory(repo: Repo) -> None:
    nested = repo.root / "tools" / "ci"
    nested.mkdir(parents=True)
    (nested / "codex.orchestrator.json").write_text(
        json.dumps({"pipelines": [{"id": "nested", "stages": [OK_STAGE]}]})
    )
    (nested / "deeper").mkdir()
    plan = _cli(repo, nested / "deeper", "plan", "nested", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    # above the nested config, the git directory is the root, where "nested" is unknown
    outer = _cli(repo, repo.root / "tools", "plan", "nested")
    assert outer.returncode == 2
    assert "unknown pipeline 'nested'" in outer.stderr


@pytest.mark.slow
def test_state_ignores_itself_for_git_status_and_add(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    _commit_config(repo)
    started = _cli(repo, repo.root, "start", "--format", "json")
    assert started.returncode == 0, started.stderr
    run_dir = (repo.root / json.loads(started.stdout)["manifest"]).parent
    assert (run_dir / ".resume-token").is_file()
    assert (repo.root / TOOL_DIR / IGNORE_FILE).read_text().splitlines()[-1] == "*"
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    _git(repo, "add", "-A")
    assert _git(repo, "diff", "--cached", "--name-only") == ""
    assert not (repo.root / ".runs").exists() and not (repo.root / "out").exists()


@pytest.mark.slow
def test_an_old_layout_is_still_used_and_now_ignored(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    _commit_config(repo)
    old = repo.cli("start", "--format", "json")  # the suite's variables: .runs and out
    assert old.returncode == 0, old.stderr
    for ignore in (repo.root / ".runs" / IGNORE_FILE, repo.root / "out" / IGNORE_FILE):
        ignore.unlink()  # as a version before this one left them
    assert ".runs/" in _git(repo, "status", "--porcelain")
    new = _cli(repo, _subdir(repo), "start", "--format", "json")
    assert new.returncode == 0, new.stderr
    assert json.loads(new.stdout)["manifest"].startswith(".runs/default/cli/")
    assert not (repo.root / TOOL_DIR).exists()
    assert (repo.root / "out" / "default" / "state.json").is_file()
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    # both runs, the old one and the new one, are seen by a command without variables
    listed = _cli(repo, repo.root, "runs", "--format", "json")
    assert len(json.loads(listed.stdout)["runs"]) == 2


def test_a_users_own_ignore_file_is_kept(repo: Repo) -> None:
    repo.pipeline(OK_STAGE)
    (repo.root / TOOL_DIR).mkdir()
    (repo.root / TOOL_DIR / IGNORE_FILE).write_text("runs/\n")
    started = _cli(repo, repo.root, "start", "--format", "json")
    assert started.returncode == 0, started.stderr
    assert (repo.root / TOOL_DIR / IGNORE_FILE).read_text() == "runs/\n"
    assert (repo.root / TOOL_DIR / "out" / IGNORE_FILE).is_file()
