"""The records runs leave are byte-identical (ids, times, pids, hosts, durations and paths
aside) to those the code wrote before its records were typed (``golden/<scenario>.txt``).

Each scenario runs the real CLI in a fresh repository, then compares `golden_records.snapshot`
of everything under ``.runs`` and ``out`` with the committed golden text. To accept a deliberate
change of the records, regenerate with ``CODEX_UPDATE_GOLDENS=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo
from helpers.dask_cluster import DaskCluster, running_cluster
from helpers.golden_records import RUN_ID, TIME, snapshot
from helpers.processes import wait_for
from helpers.runctl import manifest_of, run_dirs, try_manifest

GOLDEN = Path(__file__).with_name("golden")
SAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "codex.orchestrator.json"

pytestmark = pytest.mark.slow


def check_golden(name: str, repo: Repo, run_id: str) -> None:
    """The snapshot of ``repo`` after scenario ``name`` equals its golden text."""
    text = snapshot(repo.root, run_id)
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("CODEX_GOLDEN_DUMP"):
        Path(os.environ["CODEX_GOLDEN_DUMP"], f"{name}.txt").write_text(text)
    if os.environ.get("CODEX_UPDATE_GOLDENS") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def start(repo: Repo, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = repo.cli("start", *args, "--format", "json", env=env, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_sample_pipeline_records(repo: Repo) -> None:
    shutil.copy(SAMPLE_CONFIG, repo.root / "codex.orchestrator.json")
    (repo.root / "src" / "pkg").mkdir(parents=True)
    (repo.root / "src" / "pkg" / "mod.py").write_text("VALUE = 1\n")
    document = start(repo)
    assert document["status"] == "succeeded", document
    check_golden("sample", repo, document["run_id"])


def test_graph_records_with_retries_and_failures(repo: Repo) -> None:
    """Retries (attempt logs and history), a failure and the stage it blocks, an allowed
    failure, a timeout, a child run; one stage at a time so that the events keep one order."""
    flaky = "if [ -f .flaky ]; then echo recovered; else touch .flaky; echo boom >&2; exit 3; fi"
    repo.write_config(
        {
            "defaultPipeline": "main",
            "settings": {"kill_grace_seconds": 1, "report": True},
            "pipelines": [
                {
                    "id": "main",
                    "maxParallel": 1,
                    "stages": [
                        {"id": "prep", "command": "echo prepared"},
                        {
                            "id": "flaky",
                            "command": flaky,
                            "needs": ["prep"],
                            "retries": 2,
                            "retryDelaySeconds": 0,
                        },
                        {
                            "id": "broken",
                            "command": "echo trying; echo 'E: bad input' >&2; exit 2",
                            "needs": ["prep"],
                            "retries": 1,
                            "retryDelaySeconds": 0,
                        },
                        {"id": "after-broken", "command": "echo never", "needs": ["broken"]},
                        {
                            "id": "lenient",
                            "command": "echo tolerated >&2; exit 1",
                            "needs": ["prep"],
                            "allowFailure": True,
                        },
                        {
                            "id": "slow",
                            "command": "sleep 5",
                            "needs": ["prep"],
                            "timeoutSeconds": 0.2,
                        },
                        {"id": "nested", "kind": "subpipeline", "pipeline": "inner"},
                        {"id": "final", "command": "echo done", "needs": ["flaky", "lenient"]},
                    ],
                },
                {"id": "inner", "stages": [{"id": "hello", "command": "echo from the child"}]},
            ],
        }
    )
    document = start(repo)
    assert document["status"] == "failed", document
    check_golden("graph", repo, document["run_id"])


#: A graph whose stages ``sleeper`` and ``nested`` (a child run) wait until ``.go`` exists.
WAITING = "if [ -f .go ]; then echo {word}; else sleep 300; fi"
KILLED_CONFIG = {
    "defaultPipeline": "main",
    "settings": {"kill_grace_seconds": 1},
    "pipelines": [
        {
            "id": "main",
            "maxParallel": 2,
            "stages": [
                {"id": "first", "command": "echo one"},
                {"id": "sleeper", "command": WAITING.format(word="awake"), "needs": ["first"]},
                {"id": "nested", "kind": "subpipeline", "pipeline": "inner", "needs": ["first"]},
                {"id": "last", "command": "echo done", "needs": ["sleeper", "nested"]},
            ],
        },
        {"id": "inner", "stages": [{"id": "wait", "command": WAITING.format(word="child")}]},
    ],
}


def has_handle(run_dir: Path, index: int) -> bool:
    """Stage ``index``'s handle is in the run's manifest (its write may lag the event's)."""
    manifest = try_manifest(run_dir)
    return manifest is not None and manifest["commands"][index - 1].get("handle") is not None


def killed_run(repo: Repo) -> str:
    """Start `KILLED_CONFIG` and SIGKILL its driver once both waiting stages run; the run id."""
    repo.write_config(KILLED_CONFIG)
    driver = repo.spawn("start", "--format", "json")
    try:
        parent = wait_for(lambda: run_dirs(repo, "default")[:1], 60, "the run")[0]

        def both_waiting() -> bool:
            children = manifest_of(parent).get("child_runs", []) if has_handle(parent, 2) else []
            return bool(children) and has_handle(parent.parent / children[0]["run_id"], 1)

        wait_for(both_waiting, 60, "the sleeper and the child's stage to run")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.communicate()
    (repo.root / ".go").write_text("")
    return parent.name


def test_resume_of_a_killed_run_records(repo: Repo) -> None:
    """Resume reaps the dead driver's stage, settles its child run, re-runs both."""
    run_id = killed_run(repo)
    result = repo.cli("resume", run_id, "--format", "json", "--reason", "golden", "--actor", "t")
    assert result.returncode == 0, result.stderr
    check_golden("resume", repo, run_id)


def test_cancel_of_a_killed_run_records(repo: Repo) -> None:
    """Cancelling a dead run settles it (and its child run) as cancelled."""
    run_id = killed_run(repo)
    result = repo.cli("cancel", run_id, "--reason", "golden", "--actor", "t", "--format", "json")
    assert result.returncode == 0, result.stderr
    check_golden("cancel-dead", repo, run_id)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    with running_cluster(tmp_path / "dask", ()) as running:
        yield running


@pytest.mark.dask
def test_dask_run_records(repo: Repo, cluster: DaskCluster) -> None:
    repo.pipeline(
        {"id": "ok", "command": "echo remote"},
        {"id": "bad", "command": "echo out; echo 'E: remote failure' >&2; exit 4"},
        {"id": "after", "command": "echo never"},
    )
    document = start(repo, "--executor", "dask", "--scheduler", cluster.address)
    assert document["status"] == "failed", document
    check_golden("dask", repo, document["run_id"])


def test_goldens_hold_no_id_or_time_of_the_run_that_wrote_them() -> None:
    goldens = sorted(GOLDEN.glob("*.txt"))
    assert [golden.stem for golden in goldens] == [
        "cancel-dead",
        "dask",
        "graph",
        "resume",
        "sample",
    ]
    for golden in goldens:
        text = golden.read_text()
        assert "<RUN-1>" in text
        assert not RUN_ID.search(text) and not TIME.search(text) and "pytest-of" not in text
