"""Which files are inputs: globs and ``"git"`` on real trees with links, FIFOs and odd names."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from codex_orchestrator.cache.digests import KIND_DIRECTORY, KIND_FILE, KIND_LINK, KIND_SPECIAL
from codex_orchestrator.cache.spec import CacheSpec
from conftest import GIT_IDENTITY

from .cache_kit import Stage, run_script, write
from .gitrepo import git


def _paths(root: Path, *inputs: str, exclude: tuple[str, ...] = ()) -> list[str]:
    spec = CacheSpec(inputs="git" if inputs == ("git",) else inputs)
    stage = Stage(root, root.parent / "cache", spec)
    fingerprinter = stage.fingerprinter()
    fingerprinter.exclude = exclude
    digests = fingerprinter.inputs(stage.spec)
    assert digests.problem is None, digests.problem
    return list(digests.paths)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for relative in (
        "src/app.py",
        "src/lib/util.py",
        "src/lib/deep/x.py",
        "src/.hidden.py",
        "src/notes.txt",
        "tests/test_app.py",
        "pyproject.toml",
        "README.md",
        ".git/config",
        "src/.git/HEAD",
        ".runs/default/cli/run/manifest.json",
    ):
        write(root, relative)
    return root


def test_globs_match_files_recursively_and_sorted(root: Path) -> None:
    assert _paths(root, "src/**/*.py", "pyproject.toml") == [
        "pyproject.toml",
        "src/.hidden.py",
        "src/app.py",
        "src/lib/deep/x.py",
        "src/lib/util.py",
    ]
    assert _paths(root, "src/*.py") == ["src/.hidden.py", "src/app.py"]
    assert _paths(root, "src/lib/?til.py", "*.md") == ["README.md", "src/lib/util.py"]


def test_a_directory_takes_every_file_below_it(root: Path) -> None:
    assert _paths(root, "src/lib") == ["src/lib/deep/x.py", "src/lib/util.py"]
    assert _paths(root, "tests/") == ["tests/test_app.py"]


def test_git_metadata_and_excluded_directories_are_never_inputs(root: Path) -> None:
    everything = _paths(root, "**", exclude=(".runs",))
    assert ".git/config" not in everything and "src/.git/HEAD" not in everything
    assert not any(path.startswith(".runs/") for path in everything)
    assert "src/lib/util.py" in everything
    assert _paths(root, ".runs/**", exclude=(".runs",)) == []
    assert _paths(root, ".") == _paths(root, "**")


def test_a_glob_matching_nothing_is_an_empty_set(root: Path) -> None:
    assert _paths(root, "nothing/**", "*.rs") == []


def test_links_are_inputs_as_links_and_never_followed(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "secret.py", "secret\n")
    os.symlink(outside, root / "src" / "escape")  # a directory link out of the root
    os.symlink(outside / "secret.py", root / "src" / "secret.py")  # a file link out of it
    os.symlink("lib", root / "src" / "inner")  # a directory link inside the root
    stage = Stage(root, tmp_path / "cache", CacheSpec(inputs=("src/**/*.py", "src/escape")))
    digests = stage.inputs()
    paths = list(digests.paths)
    assert "src/escape" in paths and "src/secret.py" in paths
    assert not any(path.startswith(("src/escape/", "src/inner/")) for path in paths)
    assert digests.entry(paths.index("src/secret.py"))[:1] == KIND_LINK
    assert digests.entry(paths.index("src/app.py"))[:1] == KIND_FILE
    # the key follows the link's text, not what it points to
    before = stage.inputs().digest
    (outside / "secret.py").write_text("changed outside\n")
    assert stage.inputs().digest == before
    os.unlink(root / "src" / "secret.py")
    os.symlink(outside / "other.py", root / "src" / "secret.py")
    assert stage.inputs().digest != before


def test_a_glob_base_behind_a_link_matches_nothing(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "a.py")
    os.symlink(outside, root / "vendor")
    assert _paths(root, "vendor/**", "vendor/a.py") == []
    assert _paths(root, "vendor") == ["vendor"]  # the link itself


def test_fifos_and_sockets_are_special_entries_and_never_opened(root: Path, tmp_path: Path) -> None:
    os.mkfifo(root / "src" / "pipe.py")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "src" / "sock.py"))
    # In a child, with a deadline: opening the FIFO for reading would block forever.
    stage = Stage(root, tmp_path / "cache", CacheSpec(inputs=("src/**",)))
    body = (
        "digests = stage.inputs()\n"
        "kinds = [digests.entry(list(digests.paths).index(p))[:1] for p in sys.argv[3:]]\n"
        "print(digests.problem, *kinds)"
    )
    try:
        answer = run_script(body, stage, "src/pipe.py", "src/sock.py").split()
    finally:
        server.close()
    assert answer == ["None", repr(KIND_SPECIAL), repr(KIND_SPECIAL)]


def test_odd_file_names_are_inputs(root: Path) -> None:
    write(root, "src/new\nline.py")
    write(root, "src/caf\xe9.py")
    (root / "src").joinpath(os.fsdecode(b"raw\xff.py")).write_text("bytes\n")
    paths = _paths(root, "src/*.py")
    assert "src/new\nline.py" in paths and "src/caf\xe9.py" in paths
    assert os.fsdecode(b"src/raw\xff.py") in paths


def test_an_unreadable_directory_is_a_problem_not_a_smaller_set(root: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every directory")
    locked = root / "src" / "lib"
    locked.chmod(0)
    try:
        digests = Stage(root, tmp_path / "cache", CacheSpec(inputs=("src/**",))).inputs()
    finally:
        locked.chmod(0o755)
    assert digests.problem is not None and "src/lib" in digests.problem


def test_a_directory_that_cannot_be_opened_is_a_problem(root: Path, tmp_path: Path) -> None:
    deep = "src/" + "/".join(f"d{level}" for level in range(40))
    write(root, f"{deep}/bottom.py")
    stage = Stage(root, tmp_path / "cache", CacheSpec(inputs=("src/**",)))
    body = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))\n"
        "print(stage.inputs().problem)"
    )
    problem = run_script(body, stage)
    assert "Too many open files" in problem, problem


# --- "git" -----------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, ".gitignore", "build/\n*.log\n")
    write(root, "src/app.py")
    write(root, "src/old.py")
    write(root, "docs/guide.md")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    write(root, "src/new.py")  # untracked, not ignored
    write(root, "build/out.bin")  # ignored
    write(root, "debug.log")  # ignored
    return root


def test_git_lists_tracked_and_untracked_files_but_not_ignored_ones(repo: Path) -> None:
    (repo / "src" / "old.py").unlink()  # tracked, deleted from the working tree: absent
    assert _paths(repo, "git") == [".gitignore", "docs/guide.md", "src/app.py", "src/new.py"]


def test_git_inputs_below_a_subdirectory_root(repo: Path) -> None:
    assert _paths(repo / "src", "git") == ["app.py", "new.py", "old.py"]


def test_a_tracked_file_beyond_a_link_is_absent(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "guide.md", "not the repository's\n")
    (repo / "docs" / "guide.md").unlink()
    (repo / "docs").rmdir()
    os.symlink(outside, repo / "docs")
    paths = _paths(repo, "git")
    assert "docs/guide.md" not in paths
    assert "docs" in paths  # git lists the link itself as untracked


def test_git_outside_a_repository_is_a_problem(tmp_path: Path) -> None:
    write(tmp_path / "plain", "a.py")
    digests = Stage(tmp_path / "plain", tmp_path / "cache", CacheSpec(inputs="git")).inputs()
    assert digests.problem is not None
    assert digests.problem.startswith('inputs "git": ')
    assert "not in a git repository" in digests.problem


def test_a_git_that_runs_over_its_deadline_is_killed(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    pid_file = tmp_path / "git.pid"
    write(bin_dir, "git", f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    stage = Stage(repo, tmp_path / "cache", CacheSpec(inputs="git"))
    fingerprinter = stage.fingerprinter()
    fingerprinter.git_timeout = 0.5
    started = time.monotonic()
    digests = fingerprinter.inputs(stage.spec)
    assert digests.problem == 'inputs "git": git ls-files took more than 0.5 s'
    assert time.monotonic() - started < 60  # the fake git sleeps 300 s
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped, not left running


def test_git_not_installed_is_a_problem(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    digests = Stage(repo, tmp_path / "cache", CacheSpec(inputs="git")).inputs()
    assert digests.problem == 'inputs "git": git is not installed'


def test_a_conflicted_file_is_one_input(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "other")
    write(repo, "src/app.py", "theirs\n")
    git(repo, "commit", "-qam", "theirs")
    git(repo, "checkout", "-q", "main")
    write(repo, "src/app.py", "ours\n")
    git(repo, "commit", "-qam", "ours")
    merge = subprocess.run(
        ["git", *GIT_IDENTITY, "merge", "other"], cwd=repo, capture_output=True, check=False
    )
    assert merge.returncode != 0  # conflicted: the index holds the file three times
    paths = _paths(repo, "git")
    assert paths.count("src/app.py") == 1


def test_a_nested_repository_is_a_directory_entry(repo: Path, tmp_path: Path) -> None:
    nested = repo / "vendor" / "lib"
    nested.mkdir(parents=True)
    git(nested, "init", "-q")
    write(nested, "code.py")
    stage = Stage(repo, tmp_path / "cache", CacheSpec(inputs="git"))
    digests = stage.inputs()
    assert "vendor/lib" in digests.paths and "vendor/lib/code.py" not in digests.paths
    assert digests.entry(digests.paths.index("vendor/lib"))[:1] == KIND_DIRECTORY
