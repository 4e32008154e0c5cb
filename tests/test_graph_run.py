"""Graph pipelines end to end, with real processes: concurrency, failures, retries, signals."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.util.procfs import live_group_members
from conftest import Repo
from helpers.processes import wait_for
from helpers.runctl import kill_group

FAST = {"CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS": "0.1"}


def stage(stage_id: str, command: str = "true", **extra: Any) -> dict[str, Any]:
    return {"id": stage_id, "command": command, **extra}


def graph(repo: Repo, *stages: dict[str, Any], **pipeline: Any) -> None:
    repo.write_config(
        {
            "defaultPipeline": "main",
            "settings": {"kill_grace_seconds": 1},
            "pipelines": [{"id": "main", "stages": list(stages), **pipeline}],
        }
    )


def start(repo: Repo, *args: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    result = repo.cli("start", *args, "--format", "json", env=FAST, timeout=120)
    document = json.loads(result.stdout)
    return result.returncode, document, repo.manifest(document)


def by_id(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in manifest["commands"]}


def moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def span(entry: dict[str, Any]) -> tuple[float, float]:
    return moment(entry["started_at"]), moment(entry["completed_at"])


def overlap(first: dict[str, Any], second: dict[str, Any]) -> bool:
    (a0, a1), (b0, b1) = span(first), span(second)
    return a0 < b1 and b0 < a1


def most_at_once(entries: list[dict[str, Any]]) -> int:
    edges = sorted(
        [(start, 1) for start, _ in map(span, entries)]
        + [(end, -1) for _, end in map(span, entries)]
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def run_manifest(repo: Repo) -> dict[str, Any] | None:
    found = list((repo.root / ".runs" / "default" / "cli").glob("*/manifest.json"))
    if not found:
        return None
    try:
        loaded: dict[str, Any] = json.loads(found[0].read_text())
    except ValueError:
        return None
    return loaded


def running_groups(repo: Repo) -> list[int]:
    manifest = run_manifest(repo) or {"commands": []}
    return [
        entry["handle"]["pgid"]
        for entry in manifest["commands"]
        if entry["status"] == "running" and isinstance(entry.get("handle"), dict)
    ]


@contextlib.contextmanager
def spawned(repo: Repo, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``start ARGS --format json`` in the background, killed at the end if still running."""
    proc = repo.spawn("start", *args, "--format", "json", env=FAST)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def group_left(pgid: int) -> list[int]:
    return live_group_members(pgid) or []


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.slow
def test_diamond_runs_the_middle_at_once_and_joins(repo: Repo) -> None:
    graph(
        repo,
        stage("a"),
        stage("b", "sleep 0.6", needs=["a"]),
        stage("c", "sleep 0.6", needs=["a"]),
        stage("d", needs=["b", "c"]),
    )

    code, document, manifest = start(repo)

    assert code == 0, document
    entries = by_id(manifest)
    assert [entry["status"] for entry in manifest["commands"]] == ["succeeded"] * 4
    assert overlap(entries["b"], entries["c"])
    assert span(entries["b"])[0] >= span(entries["a"])[1]
    assert span(entries["d"])[0] >= max(span(entries["b"])[1], span(entries["c"])[1])
    assert [entry["needs"] for entry in manifest["commands"]] == [[], ["a"], ["a"], ["b", "c"]]


@pytest.mark.slow
def test_fan_out_and_fan_in(repo: Repo) -> None:
    fan = [stage(f"f{i}", f"sleep 0.5; echo {i} > out{i}", needs=["root"]) for i in range(4)]
    graph(
        repo,
        stage("root"),
        *fan,
        stage("join", "cat out0 out1 out2 out3", needs=[f"f{i}" for i in range(4)]),
        maxParallel=4,
    )

    code, document, manifest = start(repo)

    assert code == 0, document
    entries = by_id(manifest)
    fanned = [entries[f"f{i}"] for i in range(4)]
    assert most_at_once(fanned) == 4
    assert span(entries["join"])[0] >= max(span(entry)[1] for entry in fanned)
    assert entries["join"]["summary"] == "3"


@pytest.mark.slow
def test_max_parallel_is_honoured(repo: Repo) -> None:
    graph(repo, *[stage(f"s{i}", "sleep 0.4", needs=[]) for i in range(6)], maxParallel=2)

    code, _, manifest = start(repo)

    assert code == 0
    assert most_at_once(manifest["commands"]) == 2


@pytest.mark.slow
def test_max_parallel_from_the_command_line(repo: Repo) -> None:
    graph(repo, *[stage(f"s{i}", "sleep 0.4", needs=[]) for i in range(4)])

    code, _, manifest = start(repo, "--max-parallel", "1")

    assert code == 0
    assert most_at_once(manifest["commands"]) == 1


def test_sequential_pipeline_still_stops_at_the_first_failure(repo: Repo) -> None:
    graph(repo, stage("a"), stage("b", "exit 3"), stage("c"))

    code, _, manifest = start(repo)

    assert code == 1
    assert manifest["status_detail"] == "stage:b:failed"
    assert [entry["status"] for entry in manifest["commands"]] == [
        "succeeded",
        "failed",
        "pending",
    ]
    assert [entry["needs"] for entry in manifest["commands"]] == [[], ["a"], ["b"]]


# --- failures --------------------------------------------------------------------------------


@pytest.mark.slow
def test_failure_skips_its_dependents_while_another_branch_completes(repo: Repo) -> None:
    graph(
        repo,
        stage("build", "sleep 0.2; echo broken >&2; exit 2"),
        stage("lint", needs=["build"]),
        stage("package", needs=["lint"]),
        stage("docs", "sleep 0.8; echo docs done"),
    )

    code, document, manifest = start(repo)

    assert code == 1
    assert document["status"] == "failed"
    assert manifest["status_detail"] == "stage:build:failed"
    entries = by_id(manifest)
    assert entries["build"]["status"] == "failed"
    for skipped in ("lint", "package"):
        assert entries[skipped]["status"] == "skipped"
        assert entries[skipped]["skip_reason"] == "needs-failed"
        assert "build" in entries[skipped]["summary"]
        assert entries[skipped]["started_at"] is None
    assert entries["docs"]["status"] == "succeeded"
    assert entries["docs"]["summary"] == "docs done"


@pytest.mark.slow
def test_fail_fast_tears_down_the_other_branches(repo: Repo) -> None:
    graph(
        repo,
        stage("quick-fail", "sleep 0.3; exit 1"),
        stage("long", "sleep 300"),
        stage("after-long", needs=["long"]),
        stage("independent", "sleep 300", needs=["quick-fail"]),
        failFast=True,
    )
    started = time.monotonic()

    code, _, manifest = start(repo)

    assert time.monotonic() - started < 20
    assert code == 1
    assert manifest["status"] == "failed"
    assert manifest["status_detail"] == "stage:quick-fail:failed"
    entries = by_id(manifest)
    assert entries["long"]["status"] == "failed"
    assert "failFast" in entries["long"]["summary"]
    assert "quick-fail" in entries["long"]["summary"]
    assert entries["after-long"]["status"] == "pending"
    assert entries["independent"]["skip_reason"] == "needs-failed"
    assert group_left(entries["long"]["handle"]["pgid"]) == []


# --- retries ---------------------------------------------------------------------------------


FLAKY = (
    "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; "
    'echo "attempt $n"; [ $n -ge 3 ]'
)


@pytest.mark.slow
def test_retries_keep_every_attempt_and_back_off(repo: Repo) -> None:
    graph(repo, stage("flaky", FLAKY, retries=2, retryDelaySeconds=0.3, needs=[]))

    code, _, manifest = start(repo)

    assert code == 0
    entry = manifest["commands"][0]
    assert entry["status"] == "succeeded"
    assert entry["attempts"] == 3
    assert entry["summary"] == "succeeded on attempt 3 of 3; attempt 3"
    history = entry["attempt_history"]
    assert [item["exit_code"] for item in history] == [1, 1, 0]
    logs = repo.root / manifest["artifact_root"] / "commands"
    assert [item["log_path"].rsplit("/", 1)[1] for item in history] == [
        "01-flaky.stdout.log",
        "01-flaky.attempt-2.stdout.log",
        "01-flaky.attempt-3.stdout.log",
    ]
    for number, item in enumerate(history, start=1):
        assert (repo.root / item["log_path"]).read_text() == f"attempt {number}\n"
        assert (logs / Path(item["stderr_log_path"]).name).exists()
    gaps = [
        moment(later["started_at"]) - moment(earlier["completed_at"])
        for earlier, later in itertools.pairwise(history)
    ]
    assert gaps[0] >= 0.3 - 0.01
    assert gaps[1] >= 0.6 - 0.01


def test_retries_exhausted_fail_the_stage(repo: Repo) -> None:
    graph(repo, stage("always", "echo nope; exit 4", retries=1, retryDelaySeconds=0))

    code, _, manifest = start(repo)

    assert code == 1
    entry = manifest["commands"][0]
    assert entry["attempts"] == 2
    assert entry["summary"].startswith("failed on attempt 2 of 2")
    assert manifest["status_detail"] == "stage:always:failed"
    assert entry["error_file"]


def test_a_cancelled_stage_is_never_retried(repo: Repo) -> None:
    graph(repo, stage("slow", "sleep 300", retries=3, retryDelaySeconds=0, needs=[]))
    with spawned(repo) as proc:
        wait_for(lambda: len(running_groups(repo)) == 1, timeout=30, what="the stage to run")
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=30)

    assert proc.returncode == 143
    manifest = repo.manifest(json.loads(stdout))
    assert manifest["commands"][0]["attempts"] == 1
    assert manifest["commands"][0]["status"] == "failed"


# --- signals, SIGKILL, resume ----------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_with_four_stages_running_ends_every_group(repo: Repo) -> None:
    helper = "sleep 300 & sh -c 'trap \"\" TERM; while :; do sleep 1; done' & wait"
    graph(
        repo,
        *[stage(f"s{i}", helper, needs=[]) for i in range(4)],
        stage("later", needs=["s0"]),
        maxParallel=4,
    )
    with spawned(repo) as proc:
        wait_for(lambda: len(running_groups(repo)) == 4, timeout=30, what="four stages to run")
        groups = running_groups(repo)
        wait_for(
            lambda: all(len(group_left(g)) >= 3 for g in groups), timeout=30, what="the helpers"
        )
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 143, stderr
    assert [group_left(pgid) for pgid in groups] == [[], [], [], []]
    manifest = repo.manifest(json.loads(stdout))
    assert (manifest["status"], manifest["status_detail"]) == ("cancelled", "signal:SIGTERM")
    entries = by_id(manifest)
    assert [entries[f"s{i}"]["status"] for i in range(4)] == ["failed"] * 4
    assert entries["later"]["status"] == "pending"


@pytest.mark.slow
def test_a_timeout_ends_only_its_stage_while_others_finish(repo: Repo) -> None:
    graph(
        repo,
        stage("hang", "sleep 300 & wait", timeoutSeconds=0.5),
        stage("after-hang", needs=["hang"]),
        stage("steady", "sleep 1; echo steady done"),
    )

    code, _, manifest = start(repo)

    assert code == 1
    assert manifest["status_detail"] == "stage:hang:timeout"
    entries = by_id(manifest)
    assert entries["hang"]["status"] == "failed"
    assert entries["hang"]["timed_out"] is True
    assert group_left(entries["hang"]["handle"]["pgid"]) == []
    assert entries["after-hang"]["skip_reason"] == "needs-failed"
    assert entries["steady"]["summary"] == "steady done"


@pytest.mark.slow
def test_sigkill_then_resume_reruns_only_what_did_not_succeed(repo: Repo) -> None:
    waits = "echo run >> {0}.runs; [ -f resumed ] || sleep 300"
    graph(
        repo,
        stage("a", "echo run >> a.runs"),
        stage("b", waits.format("b"), needs=["a"]),
        stage("c", waits.format("c"), needs=["a"]),
        stage("d", "echo run >> d.runs", needs=["b", "c"]),
    )
    with spawned(repo) as proc:
        wait_for(lambda: len(running_groups(repo)) == 2, timeout=30, what="b and c to run")
        groups = running_groups(repo)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    try:
        killed = run_manifest(repo)
        assert killed is not None
        assert all(group_left(pgid) for pgid in groups)  # the dead run left its stages behind
        (repo.root / "resumed").touch()

        result = repo.cli("resume", killed["run_id"], "--format", "json", env=FAST, timeout=120)

        assert result.returncode == 0, result.stderr
        assert [group_left(pgid) for pgid in groups] == [[], []]
    finally:
        for pgid in groups:  # the recorded stage groups, should resume not have ended them
            kill_group(pgid)
    manifest = repo.manifest(json.loads(result.stdout))
    assert [entry["status"] for entry in manifest["commands"]] == ["succeeded"] * 4
    runs = {name: (repo.root / f"{name}.runs").read_text().count("run") for name in "abcd"}
    assert runs == {"a": 1, "b": 2, "c": 2, "d": 1}


@pytest.mark.slow
def test_resume_reruns_failed_stages_and_their_needs_failed_skips(repo: Repo) -> None:
    graph(
        repo,
        stage("build", "echo run >> build.runs; [ -f fixed ]"),
        stage("test", "echo run >> test.runs", needs=["build"]),
        stage("docs", "echo run >> docs.runs"),
    )
    code, document, first = start(repo)
    assert code == 1
    assert by_id(first)["test"]["skip_reason"] == "needs-failed"
    (repo.root / "fixed").touch()

    result = repo.cli("resume", document["run_id"], "--format", "json", env=FAST)

    assert result.returncode == 0, result.stderr
    manifest = repo.manifest(json.loads(result.stdout))
    assert [entry["status"] for entry in manifest["commands"]] == ["succeeded"] * 3
    assert by_id(manifest)["test"].get("skip_reason") is None
    runs = {
        name: (repo.root / f"{name}.runs").read_text().count("run")
        for name in ("build", "test", "docs")
    }
    assert runs == {"build": 2, "test": 1, "docs": 1}


# --- sub-pipelines and output ----------------------------------------------------------------


@pytest.mark.slow
def test_subpipeline_stages_take_part_in_the_graph(repo: Repo) -> None:
    repo.write_config(
        {
            "defaultPipeline": "main",
            "pipelines": [
                {"id": "child", "stages": [stage("x", "sleep 0.5"), stage("y", "echo child")]},
                {
                    "id": "main",
                    "stages": [
                        stage("a"),
                        {"kind": "subpipeline", "id": "sub", "pipeline": "child", "needs": ["a"]},
                        stage("side", "sleep 0.5", needs=["a"]),
                        stage("z", needs=["sub", "side"]),
                    ],
                },
            ],
        }
    )

    code, document, manifest = start(repo)

    assert code == 0, document
    entries = by_id(manifest)
    assert overlap(entries["sub"], entries["side"])
    assert span(entries["z"])[0] >= span(entries["sub"])[1]
    [child] = manifest["child_runs"]
    assert child["status"] == "succeeded"
    child_manifest = json.loads((repo.root / child["manifest"]).read_text())
    assert child_manifest["parent_run_id"] == manifest["run_id"]
    assert [entry["status"] for entry in child_manifest["commands"]] == ["succeeded"] * 2


@pytest.mark.slow
def test_a_failing_subpipeline_stage_skips_its_dependents(repo: Repo) -> None:
    repo.write_config(
        {
            "defaultPipeline": "main",
            "pipelines": [
                {"id": "child", "stages": [stage("x", "exit 1")]},
                {
                    "id": "main",
                    "stages": [
                        {"kind": "subpipeline", "id": "sub", "pipeline": "child", "needs": []},
                        stage("after", needs=["sub"]),
                        stage("other", "sleep 0.3"),
                    ],
                },
            ],
        }
    )

    code, _, manifest = start(repo)

    assert code == 1
    assert manifest["status_detail"] == "stage:sub:failed"
    entries = by_id(manifest)
    assert entries["after"]["skip_reason"] == "needs-failed"
    assert entries["other"]["status"] == "succeeded"


@pytest.mark.slow
def test_concurrent_output_is_echoed_with_a_stage_prefix_on_a_terminal(repo: Repo) -> None:
    graph(
        repo,
        stage("left", "for i in 1 2 3; do echo left-$i; sleep 0.1; done", needs=[]),
        stage("right", "for i in 1 2 3; do echo right-$i; sleep 0.1; done", needs=[]),
    )
    leader, follower = os.openpty()
    proc = subprocess.Popen(
        [*repo_cli_argv(), "start"],
        cwd=repo.root,
        env={
            **repo.env,
            **FAST,
            "TERM": "dumb",
        },  # the live view replaces the echo on a capable terminal
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        proc.wait(timeout=60)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    assert proc.returncode == 0
    lines = output.decode().replace("\r", "").splitlines()
    for name in ("left", "right"):
        for i in (1, 2, 3):
            assert f"[{name}] {name}-{i}" in lines


def repo_cli_argv() -> list[str]:
    return [sys.executable, "-m", "codex_orchestrator"]


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["0", "many"])
def test_bad_max_parallel_on_resume_changes_nothing(repo: Repo, bad: str) -> None:
    graph(repo, stage("a", "exit 1"))
    _, document, _ = start(repo)
    before = (repo.root / document["manifest"]).read_bytes()

    result = repo.cli("resume", document["run_id"], "--max-parallel", bad)

    assert result.returncode == 2
    assert "--max-parallel" in result.stderr
    assert (repo.root / document["manifest"]).read_bytes() == before
