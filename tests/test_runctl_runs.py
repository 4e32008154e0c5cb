"""``runs``, ``logs`` and ``stats`` through the real CLI, across processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import Repo
from helpers.processes import wait_for
from helpers.runctl import (
    json_cli,
    kill_run_groups,
    metrics_lines,
    raw_cli,
    run_dirs,
    try_manifest,
)

RUN_FIELDS = {
    "run_id",
    "task_id",
    "pipeline_id",
    "status",
    "started_at",
    "completed_at",
    "duration_seconds",
    "failed_stage",
    "stale",
}
BINARY = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 300 + b'\\r\\0tail'); sys.stderr.buffer.write(b'\\xff\\xfeerr\\n' * 1000)"


def _two_pipelines(repo: Repo) -> None:
    repo.write_config(
        {
            "defaultPipeline": "main",
            "pipelines": [
                {
                    "id": "main",
                    "stages": [
                        {"id": "ok", "command": "echo ok"},
                        {"id": "bad", "command": "exit 3"},
                    ],
                },
                {"id": "quick", "stages": [{"id": "one", "command": "echo one"}]},
            ],
        }
    )


@pytest.mark.slow
def test_runs_lists_newest_first_with_filters(repo: Repo) -> None:
    _two_pipelines(repo)
    started = []
    for task, pipeline in (
        ("alpha", "main"),
        ("beta", "quick"),
        ("alpha", "quick"),
        ("beta", "main"),
    ):
        result = repo.cli("start", pipeline, "--task", task, "--format", "json")
        started.append(json.loads(result.stdout)["run_id"])
    code, document = json_cli(repo, "runs")
    assert code == 0
    assert [row["run_id"] for row in document["runs"]] == started[::-1]
    assert all(row.keys() >= RUN_FIELDS for row in document["runs"])
    failed = [row for row in document["runs"] if row["status"] == "failed"]
    assert {row["failed_stage"] for row in failed} == {"bad"} and len(failed) == 2
    assert all(row["stale"] is False and row["duration_seconds"] >= 0 for row in document["runs"])

    _, only_alpha = json_cli(repo, "runs", "--task", "alpha")
    assert [row["run_id"] for row in only_alpha["runs"]] == [started[2], started[0]]
    _, failed_only = json_cli(repo, "runs", "--status", "failed")
    assert [row["run_id"] for row in failed_only["runs"]] == [started[3], started[0]]
    _, quick = json_cli(repo, "runs", "--pipeline", "quick", "--limit", "1")
    assert [row["run_id"] for row in quick["runs"]] == [started[2]]
    _, future = json_cli(repo, "runs", "--since", "2999-01-01")
    assert future == {"runs": []}
    _, recent = json_cli(repo, "runs", "--since", "1h")
    assert len(recent["runs"]) == 4

    ndjson = repo.cli("runs", "--format", "ndjson", "--limit", "0")
    rows = [json.loads(line) for line in ndjson.stdout.splitlines()]
    assert [row["run_id"] for row in rows] == started[::-1]
    text = repo.cli("runs", "--status", "failed").stdout
    assert "bad" in text and started[3] in text and started[1] not in text


def test_runs_reads_the_archive_and_pending_snapshots_in_order(repo: Repo) -> None:
    """History files written by hand in the documented format: archive, state.json, pending."""
    state_dir = repo.root / "out" / "hist"
    (state_dir / "state.pending").mkdir(parents=True)

    def entry(minute: int, status: str = "succeeded") -> dict[str, str]:
        run_id = f"2026-01-01T10-{minute:02d}-00-000Z-0000{minute:04x}"
        return {
            "taskId": "hist",
            "runId": run_id,
            "pipelineId": "p",
            "status": status,
            "timestamp": f"2026-01-01T10:{minute:02d}:30.000Z",
            "manifest": f".runs/hist/cli/{run_id}/manifest.json",
        }

    archived = [entry(1), entry(2, "failed"), entry(3)]
    recent = [entry(4), entry(5)]
    (state_dir / "state.archive.ndjson").write_text(
        "".join(json.dumps(e) + "\n" for e in archived) + "{torn"
    )
    (state_dir / "state.json").write_text(
        json.dumps({"taskId": "hist", "lastRunAt": recent[-1]["timestamp"], "runs": recent})
    )
    pending = entry(6, "cancelled")
    (state_dir / "state.pending" / f"{pending['runId']}.x.json").write_text(json.dumps(pending))
    _, document = json_cli(repo, "runs", "--limit", "0")
    assert [row["run_id"] for row in document["runs"]] == [
        e["runId"] for e in [pending, *recent[::-1], *archived[::-1]]
    ]
    assert document["runs"][-1]["duration_seconds"] == 30.0
    _, limited = json_cli(repo, "runs", "--limit", "2")
    assert [row["run_id"] for row in limited["runs"]] == [pending["runId"], recent[1]["runId"]]


@pytest.mark.slow
def test_runs_marks_a_killed_run_stale(repo: Repo) -> None:
    repo.pipeline({"id": "long", "command": "sleep 60"})
    proc = repo.spawn(
        "start", "--task", "dead", env={"CODEX_ORCHESTRATOR_HEARTBEAT_INTERVAL_SECONDS": "0.1"}
    )
    try:
        wait_for(
            lambda: (
                bool(run_dirs(repo, "dead"))
                and (try_manifest(run_dirs(repo, "dead")[0]) or {})
                .get("commands", [{}])[0]
                .get("status")
                == "running"
            ),
            what="the stage to start",
        )
        code, live = json_cli(repo, "runs", "--status", "in_progress")
        assert code == 0 and live["runs"][0]["stale"] is False
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, document = json_cli(repo, "runs", "--status", "stale")
        [row] = document["runs"]
        assert row["status"] == "in_progress" and row["stale"] is True
        assert "stale" in repo.cli("runs").stdout
    finally:
        proc.kill()
        proc.wait()
        for run_dir in run_dirs(repo, "dead"):
            kill_run_groups(run_dir)


@pytest.mark.slow
def test_logs_are_the_stored_bytes_exactly(repo: Repo) -> None:
    repo.pipeline(
        {"id": "bin", "command": f'"$CODEX_ORCHESTRATOR_PYTHON" -c "{BINARY}"'},
        {"id": "lines", "command": "printf 'a\\nb\\nc\\n'; printf 'x\\ny' >&2"},
    )
    code, start = repo.start_json("--task", "logs")
    assert code == 0, start
    run_dir = repo.root / start["artifact_root"]
    stored_out = (run_dir / "commands" / "01-bin.stdout.log").read_bytes()
    stored_err = (run_dir / "commands" / "01-bin.stderr.log").read_bytes()
    assert stored_out.startswith(bytes(range(256))) and stored_out.endswith(b"\r\0tail")
    one = raw_cli(repo, "logs", start["run_id"], "bin")
    assert one.returncode == 0
    assert one.stdout == stored_out and one.stderr == stored_err
    out_only = raw_cli(repo, "logs", start["run_id"], "bin", "--stream", "stdout")
    assert out_only.stdout == stored_out and out_only.stderr == b""
    every = raw_cli(repo, "logs", start["run_id"])
    assert every.stdout == stored_out + b"a\nb\nc\n"
    assert b"==> " in every.stderr and every.stderr.count(b"<==") == 4
    tail = raw_cli(repo, "logs", start["run_id"], "lines", "--tail", "2")
    assert tail.stdout == b"b\nc\n" and tail.stderr == b"x\ny"
    _, document = json_cli(repo, "logs", start["run_id"], "lines", "--tail", "1")
    assert [(log["stream"], log["text"]) for log in document["logs"]] == [
        ("stdout", "c\n"),
        ("stderr", "y"),
    ]


@pytest.mark.slow
def test_logs_follow_prints_new_bytes_and_exits_with_the_run_code(repo: Repo) -> None:
    marker = repo.root / "go"
    repo.pipeline(
        {
            "id": "slow",
            "command": f"echo first; while [ ! -e {marker} ]; do sleep 0.05; done; echo second; exit 4",
        }
    )
    proc = repo.spawn("start", "--task", "follow")
    follower = None
    try:
        wait_for(lambda: bool(run_dirs(repo, "follow")), what="the run directory")
        run_id = run_dirs(repo, "follow")[0].name
        follower = subprocess.Popen(
            [sys.executable, "-m", "codex_orchestrator", "logs", run_id, "--follow"],
            cwd=repo.root,
            env=repo.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert follower.stdout is not None
        assert follower.stdout.readline() == b"first\n"
        marker.touch()
        touched = time.monotonic()
        assert follower.stdout.readline() == b"second\n"
        assert time.monotonic() - touched < 5
        assert follower.wait(timeout=30) == 1
        assert proc.wait(timeout=30) == 1
    finally:
        for process in (proc, follower):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_stats_counts_a_torn_line_and_writes_the_summary(repo: Repo) -> None:
    _two_pipelines(repo)
    for pipeline in ("main", "quick", "quick"):
        repo.cli("start", pipeline, "--task", "st")
    metrics = repo.root / ".runs" / "st" / "metrics.json"
    with metrics.open("a") as handle:
        handle.write('{"run_id": "torn", "sta\n[1, 2]\n')
    repo.cli("start", "quick", "--task", "st")
    assert len(metrics_lines(repo, "st")) == 5  # the torn line is followed by a whole one
    code, document = json_cli(repo, "stats", "--task", "st", "--write")
    assert code == 0
    [task] = document["tasks"]
    assert task["parse_errors"] == 2 and document["parse_errors"] == 2
    assert (task["runs"], task["succeeded"], task["failed"], task["cancelled"]) == (4, 3, 1, 0)
    assert task["success_rate"] == 0.75
    main = next(p for p in task["pipelines"] if p["pipeline_id"] == "main")
    assert {stage["stage_id"]: stage["failures"] for stage in main["stages"]} == {"ok": 0, "bad": 1}
    assert set(task["duration_seconds"]) >= {"p50", "p95", "max"}
    summary = json.loads((repo.root / ".runs" / "st" / "metrics-summary.json").read_text())
    assert summary.keys() >= {
        "generated_at",
        "task_id",
        "metrics_file",
        "entries_total",
        "entries_succeeded",
        "entries_failed",
        "success_rate",
        "guardrail_coverage",
        "average_duration_seconds",
        "parse_errors",
    }
    assert (summary["entries_total"], summary["entries_succeeded"], summary["parse_errors"]) == (
        4,
        3,
        2,
    )
    assert 0 <= summary["guardrail_coverage"] <= 1
    assert "unparseable" in repo.cli("stats").stdout


def test_stats_tolerates_lines_without_stages(repo: Repo) -> None:
    path = repo.root / ".runs" / "old" / "metrics.json"
    path.parent.mkdir(parents=True)
    line = {
        "run_id": "r",
        "task_id": "old",
        "pipeline_id": "p",
        "status": "failed",
        "duration_seconds": 2,
    }
    path.write_text(json.dumps(line) + "\n")
    _, document = json_cli(repo, "stats")
    [task] = document["tasks"]
    assert task["failed"] == 1 and task["pipelines"][0]["stages"] == []


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    _code, start = repo.start_json()
    cases = [
        ("runs", "--since", "yesterday"),
        ("runs", "--limit", "-3"),
        ("runs", "--limit", "ten"),
        ("runs", "--status", "weird"),
        ("runs", "--task", "../x"),
        ("logs", "2026-01-01T00-00-00-000Z-00000000"),
        ("logs", "../../etc"),
        ("logs", start["run_id"], "nostage"),
        ("logs", start["run_id"], "--tail", "x"),
        ("prune", "--older-than", "3 fortnights"),
        ("prune", "--keep", "-1"),
        ("prune", "--status", "in_progress"),
        ("prune",),
        ("stats", "--since", "2h30"),
        ("cancel", "2026-01-01T00-00-00-000Z-00000000"),
        ("cancel", "bad/id"),
    ]
    for args in cases:
        result = repo.cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), (
            args,
            result.stderr,
        )
        assert "Traceback" not in result.stderr
        as_json = repo.cli(*args, "--format", "json") if args[0] != "runs" else None
        if as_json is not None:
            assert json.loads(as_json.stdout)["exit_code"] == 2, args
    assert os.path.isdir(repo.root / start["artifact_root"])


@pytest.mark.slow
def test_logs_print_every_attempt_of_a_stage(repo: Repo) -> None:
    repo.pipeline(
        {"id": "flaky", "command": "if [ -e ok ]; then echo second; else echo first; exit 1; fi"}
    )
    code, start = repo.start_json("--task", "tries")
    assert code == 1
    (repo.root / "ok").touch()
    assert repo.cli("resume", start["run_id"]).returncode == 0
    result = raw_cli(repo, "logs", start["run_id"], "flaky", "--stream", "stdout")
    assert result.stdout == b"first\nsecond\n"
    assert result.stderr.count(b"<==") == 2 and b"attempt 2" in result.stderr
    _, document = json_cli(repo, "logs", start["run_id"], "flaky", "--stream", "stdout")
    assert [(log["attempt"], log["text"]) for log in document["logs"]] == [
        (1, "first\n"),
        (2, "second\n"),
    ]


@pytest.mark.slow
def test_since_a_date_outside_years_1_to_9999_in_utc_still_filters(repo: Repo) -> None:
    """``--since 9999-12-31T23:00:00-05:00`` is in year 10000 in UTC: it lists nothing (it
    listed everything when the bound was compared as a five-digit-year string)."""
    repo.pipeline({"id": "a", "command": "true"})
    _, start = json_cli(repo, "start", "--task", "far")
    for since, expected in (
        ("9999-12-31T23:00:00-05:00", []),
        ("9999-12-31T23:59:59.999Z", []),
        ("0001-01-01T00:00:00+05:00", [start["run_id"]]),
    ):
        code, listed = json_cli(repo, "runs", "--since", since)
        assert code == 0 and [row["run_id"] for row in listed["runs"]] == expected, since
        code, stats = json_cli(repo, "stats", "--since", since)
        assert code == 0 and stats["tasks"][0]["runs"] == len(expected), since
