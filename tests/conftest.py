"""Shared fixtures: a temporary repository and a way to drive the real CLI in it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from helpers.processes import end_marked_processes

if TYPE_CHECKING:
    from helpers.cached_repo import Cached

SRC = Path(__file__).resolve().parents[1] / "src"
# Set per test (see ``_end_leftover_processes``); not a CODEX_ORCHESTRATOR_ variable, so
# ``cli_env`` keeps it and every CLI, stage and helper a test starts inherits it.
TEST_MARKER_ENV = "CODEX_TEST_PROCESS_MARKER"


def pytest_configure(config: pytest.Config) -> None:
    """Give the processes the tests start a working Ctrl-C: a runner started in the background
    (``&``, nohup, some CI agents) ignores SIGINT, every child would inherit that, and a test
    that sends one SIGINT would wait for an exit that never comes."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _cache_bytecode_outside_the_tree(config)


def _cache_bytecode_outside_the_tree(config: pytest.Config) -> None:
    """Under ``PYTHONDONTWRITEBYTECODE`` every interpreter the suite starts (some two thousand
    CLIs, servers and workers) compiled the package from source again: about 0.1 CPU-second
    each, a third of the CPU of a CLI-heavy test file. They keep their bytecode in a directory
    of this session instead (``PYTHONPYCACHEPREFIX``), still none in the source tree; the
    xdist workers and every child inherit it, and the session that made it removes it."""
    if not os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        return
    prefix = tempfile.mkdtemp(prefix="codex-tests-pycache-")
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    config.add_cleanup(lambda: shutil.rmtree(prefix, ignore_errors=True))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than the cores, at most three. Most of a test's time is
    spent waiting on the real processes it drives, so on two cores a third worker keeps the CPU
    busy: the whole suite took 305 s with two workers and 255 s with three (same machine, same
    CPU-seconds). One core gets one worker."""
    cores = os.cpu_count() or 1
    return 1 if cores < 2 else min(3, cores + 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with the most slow (or Dask) tests first, each file's tests in their own order:
    with ``--dist loadfile`` the workers start on the longest files and end on short ones,
    so neither waits at the end for the other's long file."""
    weight = Counter(
        item.path
        for item in items
        if item.get_closest_marker("slow") or item.get_closest_marker("dask")
    )
    items.sort(key=lambda item: -weight[item.path])


@pytest.fixture(autouse=True)
def _end_leftover_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """End whatever a test started that is still alive when it ends: a ``sleep 300`` stage
    orphaned by a killed driver, a helper left behind by a failed assertion.

    Every process the test starts inherits a marker unique to the test; afterwards each live
    process holding it is killed by pid (never by name, never a group id <= 1) and a warning
    names how many there were.
    """
    entry_value = uuid.uuid4().hex
    monkeypatch.setenv(TEST_MARKER_ENV, entry_value)
    try:
        yield
    finally:
        ended = end_marked_processes(f"{TEST_MARKER_ENV}={entry_value}")
        if ended:
            left = f"ended {len(ended)} process(es) the test left running: {ended}"
            warnings.warn(left, stacklevel=1)


class Repo:
    """A temporary git repository with helpers to run the CLI inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = cli_env(root)

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``codex.orchestrator.json``."""
        (self.root / "codex.orchestrator.json").write_text(json.dumps(config, indent=2))

    def pipeline(self, *stages: dict[str, Any], pipeline_id: str = "main", **extra: Any) -> None:
        """Write a config with one pipeline made of ``stages`` (plus ``extra`` top-level keys)."""
        self.write_config(
            {
                "defaultPipeline": pipeline_id,
                "pipelines": [{"id": pipeline_id, "stages": list(stages)}],
                **extra,
            }
        )

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``codex-orchestrator ARGS`` in the repository and wait for it."""
        return run_cli(self.root, *args, env={**self.env, **(env or {})}, timeout=timeout)

    def spawn(
        self, *args: str, env: dict[str, str] | None = None, new_session: bool = False
    ) -> subprocess.Popen[str]:
        """Start ``codex-orchestrator ARGS`` without waiting (``new_session``: leading its own
        process group, which the test may kill whole)."""
        return subprocess.Popen(
            [sys.executable, "-m", "codex_orchestrator", *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=new_session,
        )

    def start_json(
        self, *args: str, env: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """``start ARGS --format json``: exit code and the one JSON document."""
        result = self.cli("start", *args, "--format", "json", env=env)
        return result.returncode, json.loads(result.stdout)

    def manifest(self, document: dict[str, Any]) -> dict[str, Any]:
        """Load the manifest a start/resume/status document points to."""
        loaded: dict[str, Any] = json.loads((self.root / document["manifest"]).read_text())
        return loaded


def cli_env(root: Path, **extra: str) -> dict[str, str]:
    """A clean environment for the CLI rooted at ``root``: no inherited tool or git variables,
    no ``codex`` on the PATH, a fast heartbeat; ``extra`` adds variables."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CODEX_ORCHESTRATOR_", "MCP_RUNNER", "GIT_"))
    }
    env["PATH"] = os.pathsep.join(
        entry
        for entry in env.get("PATH", "").split(os.pathsep)
        if entry and not os.access(os.path.join(entry, "codex"), os.X_OK)
    )
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["CODEX_ORCHESTRATOR_ROOT"] = str(root)
    # The suite's paths are written for the layout of ``.runs`` and ``out``; the default
    # layout a new repository gets is tested with these unset (tests/test_layout.py).
    env["CODEX_ORCHESTRATOR_RUNS_DIR"] = ".runs"
    env["CODEX_ORCHESTRATOR_OUT_DIR"] = "out"
    env["CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS"] = "0.2"
    return {**env, **extra}


def run_cli(
    root: Path, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``codex-orchestrator ARGS`` in ``root`` with exactly ``env`` and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "codex_orchestrator", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter that imports this checkout's package; it must
    succeed."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        check=True,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], exit_code: int, *needles: str
) -> str:
    """Exit ``exit_code`` with one ``error:`` line holding ``needles``, no traceback; the line."""
    assert result.returncode == exit_code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def assert_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2 (bad input) with one ``error:`` line holding ``needles``, no traceback; the line."""
    return assert_one_line_error(result, 2, *needles)


@pytest.fixture(scope="session")
def _repo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository with one commit, made once: each test gets a copy."""
    root = tmp_path_factory.mktemp("repo-template") / "repo"
    root.mkdir()
    for command in (
        ["init", "-q", "-b", "main", "--template="],
        [*GIT_IDENTITY, "commit", "-q", "--allow-empty", "-m", "init"],
    ):
        subprocess.run(["git", *command], cwd=root, check=True, capture_output=True)
    return root


@pytest.fixture
def repo(tmp_path: Path, _repo_template: Path) -> Repo:
    """A fresh git repository with one commit (a copy of one made once per session)."""
    root = tmp_path / "repo"
    shutil.copytree(_repo_template, root, symlinks=True)
    return Repo(root)


@pytest.fixture
def cached(repo: Repo) -> Cached:
    """``repo`` whose cached stages count their real runs (`helpers.cached_repo`)."""
    from helpers.cached_repo import Cached  # it needs `Repo`, defined here

    return Cached(repo)


GIT_IDENTITY = ("-c", "user.name=test", "-c", "user.email=test@example.com")
