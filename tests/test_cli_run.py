"""End-to-end: start, status, plan and resume driven through the real CLI in a temp repo."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from conftest import Repo

RUN_ID = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z-[0-9a-f]{8}")
MANIFEST_FIELDS = {
    "version",
    "task_id",
    "task_slug",
    "run_id",
    "parent_run_id",
    "pipeline_id",
    "pipeline_title",
    "runner",
    "approval_policy",
    "status",
    "status_detail",
    "started_at",
    "completed_at",
    "updated_at",
    "heartbeat_at",
    "heartbeat_interval_seconds",
    "heartbeat_stale_after_seconds",
    "artifact_root",
    "log_path",
    "summary",
    "metrics_recorded",
    "resume_token",
    "resume_events",
    "approvals",
    "commands",
    "child_runs",
    "run_summary_path",
}
COMMAND_FIELDS = {
    "index",
    "id",
    "title",
    "command",
    "kind",
    "status",
    "started_at",
    "completed_at",
    "exit_code",
    "summary",
    "log_path",
    "error_file",
    "sub_run_id",
}


def test_successful_run_leaves_every_record(repo: Repo) -> None:
    repo.pipeline(
        {"id": "hello", "title": "Say hello", "command": "echo hello; echo to-err >&2"},
        {
            "id": "env",
            "command": 'echo "$CODEX_ORCHESTRATOR_RUN_ID $MCP_RUNNER_TASK_ID $CODEX_ORCHESTRATOR_PIPELINE_ID"',
        },
        {"id": "hinted", "command": "true", "summaryHint": "fixed summary"},
    )
    code, doc = repo.start_json("--task", "demo-1", "--approval-policy", "on-request")
    assert code == 0, doc
    assert doc["status"] == "succeeded" and RUN_ID.fullmatch(doc["run_id"])
    run_dir = repo.root / doc["artifact_root"]
    assert doc["artifact_root"] == f".runs/demo-1/cli/{doc['run_id']}"
    assert doc["manifest"] == f"{doc['artifact_root']}/manifest.json"
    assert doc["log_path"] == f"{doc['artifact_root']}/runner.ndjson"
    manifest = repo.manifest(doc)
    assert manifest.keys() >= MANIFEST_FIELDS
    assert manifest["version"] == 1 and manifest["runner"] == "codex-orchestrator"
    assert manifest["task_id"] == "demo-1" and manifest["task_slug"] == "demo-1"
    assert manifest["approval_policy"] == "on-request"
    assert manifest["status_detail"] is None and manifest["metrics_recorded"] is True
    assert manifest["resume_token"].startswith("sha256:")
    assert manifest["summary"].splitlines()[-1].startswith("Guardrails: not found")
    hello, env_stage, hinted = manifest["commands"]
    for command in manifest["commands"]:
        assert command.keys() >= COMMAND_FIELDS
        assert command["status"] == "succeeded" and command["exit_code"] == 0
    assert hello["index"] == 1 and hello["title"] == "Say hello" and hello["summary"] == "hello"
    assert hello["log_path"] == f"{doc['artifact_root']}/commands/01-hello.stdout.log"
    assert (repo.root / hello["log_path"]).read_bytes() == b"hello\n"
    assert (run_dir / "commands" / "01-hello.stderr.log").read_bytes() == b"to-err\n"
    assert env_stage["summary"] == f"{doc['run_id']} demo-1 main"
    assert hinted["summary"] == "fixed summary"
    token = run_dir / ".resume-token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_text().strip() not in json.dumps(manifest)
    assert (run_dir / ".heartbeat").read_text().strip().endswith("Z")
    events = [
        json.loads(line)["event"] for line in (run_dir / "runner.ndjson").read_text().splitlines()
    ]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    assert events.count("stage_started") == 3
    summary = json.loads((repo.root / manifest["run_summary_path"]).read_text())
    assert summary["status"] == "succeeded" and len(summary["stages"]) == 3
    metrics = [
        json.loads(line)
        for line in (repo.root / ".runs/demo-1/metrics.json").read_text().splitlines()
    ]
    assert len(metrics) == 1 and metrics[0]["run_id"] == doc["run_id"]
    assert metrics[0]["commands_passed"] == 3 and metrics[0]["commands_failed"] == 0
    state = json.loads((repo.root / "out/demo-1/state.json").read_text())
    assert state["taskId"] == "demo-1" and state["lastRunAt"] == manifest["completed_at"]
    assert state["runs"] == [
        {
            "taskId": "demo-1",
            "runId": doc["run_id"],
            "pipelineId": "main",
            "status": "succeeded",
            "timestamp": manifest["completed_at"],
            "manifest": doc["manifest"],
            "startedAt": manifest["started_at"],
            "durationSeconds": manifest["duration_seconds"],
        }
    ]


def test_failing_stage_fails_the_run(repo: Repo) -> None:
    repo.pipeline(
        {"id": "ok", "command": "echo fine"},
        {"id": "broken", "command": "echo partial; echo boom >&2; exit 3"},
        {"id": "never", "command": "echo never"},
    )
    code, doc = repo.start_json()
    assert code == 1 and doc["status"] == "failed"
    manifest = repo.manifest(doc)
    assert manifest["status_detail"] == "stage:broken:failed"
    assert [c["status"] for c in manifest["commands"]] == ["succeeded", "failed", "pending"]
    broken = manifest["commands"][1]
    assert broken["exit_code"] == 3 and broken["summary"] == "partial"
    error = json.loads((repo.root / broken["error_file"]).read_text())
    assert broken["error_file"].endswith("errors/02-broken.json")
    assert error["reason"] == "command-failed" and error["command_id"] == "broken"
    assert error["command_index"] == 2 and error["run_id"] == doc["run_id"]
    assert error["details"]["exit_code"] == 3 and error["details"]["stderr"] == "boom\n"
    assert "Pipeline main failed at stage broken" in manifest["summary"]


def test_allow_failure_stage_is_skipped_with_error_file(repo: Repo) -> None:
    repo.pipeline(
        {"id": "flaky", "command": "exit 4", "allowFailure": True},
        {"id": "after", "command": "echo after"},
    )
    code, doc = repo.start_json()
    assert code == 0
    flaky, after = repo.manifest(doc)["commands"]
    assert flaky["status"] == "skipped" and after["status"] == "succeeded"
    assert (
        json.loads((repo.root / flaky["error_file"]).read_text())["reason"]
        == "command-allow-failure"
    )


@pytest.mark.slow
def test_resume_reruns_only_failed_and_later_stages(repo: Repo) -> None:
    marker = repo.root / "fixed"
    repo.pipeline(
        {"id": "first", "command": "echo run >> first.count"},
        {"id": "second", "command": f"test -f {marker} && echo repaired"},
        {"id": "third", "command": "echo third >> third.count"},
    )
    code, doc = repo.start_json()
    assert code == 1
    marker.touch()
    result = repo.cli(
        "resume", doc["run_id"], "--actor", "tester", "--reason", "fixed it", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    resumed = json.loads(result.stdout)
    assert resumed["run_id"] == doc["run_id"] and resumed["status"] == "succeeded"
    manifest = repo.manifest(resumed)
    assert [c["status"] for c in manifest["commands"]] == ["succeeded"] * 3
    assert (repo.root / "first.count").read_text() == "run\n"
    assert (repo.root / "third.count").read_text() == "third\n"
    second = manifest["commands"][1]
    assert second["attempts"] == 2
    assert second["log_path"].endswith("commands/02-second.attempt-2.stdout.log")
    assert (repo.root / second["log_path"]).read_text() == "repaired\n"
    assert (repo.root / doc["artifact_root"] / "commands/02-second.stdout.log").exists()
    [event] = manifest["resume_events"]
    assert (
        event["actor"] == "tester"
        and event["reason"] == "fixed it"
        and event["outcome"] == "succeeded"
    )
    metrics = (repo.root / ".runs/default/metrics.json").read_text().splitlines()
    assert len(metrics) == 2
    state = json.loads((repo.root / "out/default/state.json").read_text())
    assert [(r["runId"], r["status"]) for r in state["runs"]] == [(doc["run_id"], "succeeded")]
    again = repo.cli("resume", doc["run_id"])
    assert again.returncode == 0 and "already succeeded" in again.stderr


@pytest.mark.slow
def test_resume_with_wrong_token_changes_nothing(repo: Repo) -> None:
    repo.pipeline({"id": "bad", "command": "exit 1"})
    _, doc = repo.start_json()
    before = (repo.root / doc["manifest"]).read_bytes()
    result = repo.cli("resume", doc["run_id"], "--token", "not-the-token", "--format", "json")
    assert result.returncode == 2
    assert json.loads(result.stdout) == {
        "error": f"wrong resume token for run {doc['run_id']}; nothing was changed",
        "exit_code": 2,
    }
    assert (repo.root / doc["manifest"]).read_bytes() == before
    token = (repo.root / doc["artifact_root"] / ".resume-token").read_text().strip()
    assert repo.cli("resume", doc["run_id"], "--token", token).returncode == 1


@pytest.mark.slow
def test_resume_records_the_command_that_really_ran(repo: Repo) -> None:
    repo.pipeline({"id": "flip", "command": "exit 4", "title": "Old title"})
    _, doc = repo.start_json()
    repo.pipeline({"id": "flip", "command": "echo fixed", "title": "New title"})
    result = repo.cli("resume", doc["run_id"], "--format", "json")
    assert result.returncode == 0, result.stderr
    flip = repo.manifest(doc)["commands"][0]
    assert (flip["command"], flip["title"], flip["summary"]) == ("echo fixed", "New title", "fixed")


@pytest.mark.slow
def test_resume_refuses_changed_pipeline(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "exit 1"})
    _, doc = repo.start_json()
    repo.pipeline({"id": "b", "command": "true"})
    result = repo.cli("resume", doc["run_id"])
    assert result.returncode == 2 and "changed since run" in result.stderr


@pytest.mark.slow
def test_subpipeline_links_child_and_parent(repo: Repo) -> None:
    repo.write_config(
        {
            "pipelines": [
                {
                    "id": "parent",
                    "stages": [
                        {"kind": "subpipeline", "id": "kid", "pipeline": "child"},
                        {"id": "after", "command": "true"},
                    ],
                },
                {"id": "child", "stages": [{"id": "inner", "command": "echo inside"}]},
                {
                    "id": "optional-parent",
                    "stages": [
                        {
                            "kind": "subpipeline",
                            "id": "kid",
                            "pipeline": "failing",
                            "optional": True,
                        }
                    ],
                },
                {"id": "failing", "stages": [{"id": "no", "command": "exit 9"}]},
            ]
        }
    )
    code, doc = repo.start_json("parent")
    assert code == 0
    parent = repo.manifest(doc)
    [link] = parent["child_runs"]
    assert parent["commands"][0]["sub_run_id"] == link["run_id"]
    child = json.loads((repo.root / link["manifest"]).read_text())
    assert child["parent_run_id"] == doc["run_id"] and child["status"] == "succeeded"
    assert link["status"] == "succeeded" and child["pipeline_id"] == "child"
    code, doc = repo.start_json("optional-parent")
    assert code == 0
    assert repo.manifest(doc)["commands"][0]["status"] == "skipped"


def test_plan_writes_nothing(repo: Repo) -> None:
    repo.pipeline(
        {"id": "one", "command": "echo 1"}, {"id": "two", "command": "echo 2", "allowFailure": True}
    )
    result = repo.cli("plan", "--format", "json")
    assert result.returncode == 0
    plan = json.loads(result.stdout)
    assert plan["pipeline"] == {
        "id": "main",
        "title": "main",
        "description": None,
        "source": "config",
    }
    assert [(s["index"], s["id"], s["kind"], s["command"]) for s in plan["stages"]] == [
        (1, "one", "command", "echo 1"),
        (2, "two", "command", "echo 2"),
    ]
    assert not (repo.root / ".runs").exists() and not (repo.root / "out").exists()
    builtin = json.loads(repo.cli("plan", "diagnostics", "--format", "json").stdout)
    assert builtin["pipeline"]["source"] == "builtin"
    assert [s["id"] for s in builtin["stages"]] == ["build", "lint", "test", "spec-guard"]


@pytest.mark.slow
def test_status_finds_run_under_any_task(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "echo done"})
    _, doc = repo.start_json("--task", "alpha")
    result = repo.cli(
        "status", doc["run_id"], "--format", "json", env={"MCP_RUNNER_TASK_ID": "beta"}
    )
    assert result.returncode == 0
    status = json.loads(result.stdout)
    for key in (
        "run_id",
        "status",
        "status_detail",
        "started_at",
        "completed_at",
        "manifest",
        "artifact_root",
        "log_path",
        "heartbeat_at",
        "heartbeat_age_seconds",
        "stale",
        "commands",
        "child_runs",
    ):
        assert key in status
    assert status["status"] == "succeeded" and status["stale"] is False
    assert status["manifest"] == doc["manifest"]
    text = repo.cli("status", "--run", doc["run_id"])
    assert text.returncode == 0 and "succeeded" in text.stdout and "one" in text.stdout
    assert repo.cli("status", doc["run_id"], "--task", "beta").returncode == 2


def test_task_id_from_environment(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    _, doc = repo.start_json(env={"MCP_RUNNER_TASK_ID": "0202-hardening"})
    assert doc["artifact_root"].startswith(".runs/0202-hardening/cli/")


@pytest.mark.slow
def test_parallel_run_ids_are_unique(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    procs = [repo.spawn("start", "--format", "json") for _ in range(8)]
    ids = {json.loads(proc.communicate(timeout=60)[0])["run_id"] for proc in procs}
    assert len(ids) == 8


def test_stage_cwd_and_env(repo: Repo) -> None:
    (repo.root / "sub").mkdir()
    repo.pipeline(
        {
            "id": "where",
            "command": 'echo "$(basename "$PWD") $EXTRA $CODEX_ORCHESTRATOR_TASK_ID"',
            "cwd": "sub",
            "env": {"EXTRA": "x1", "CODEX_ORCHESTRATOR_TASK_ID": ""},
        }
    )
    _, doc = repo.start_json()
    assert repo.manifest(doc)["commands"][0]["summary"] == "sub x1"


def test_text_output_names_run_and_manifest(repo: Repo) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    result = repo.cli("start")
    assert result.returncode == 0
    assert (
        re.search(r"run \S+: succeeded", result.stdout)
        and "manifest: .runs/default/cli/" in result.stdout
    )


def test_runs_dir_and_out_dir_overrides(repo: Repo, tmp_path: Path) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    outside = tmp_path / "elsewhere"
    _, doc = repo.start_json(
        env={
            "CODEX_ORCHESTRATOR_RUNS_DIR": str(outside / "runs"),
            "CODEX_ORCHESTRATOR_OUT_DIR": "state-out",
        }
    )
    assert doc["manifest"].startswith(str(outside / "runs" / "default" / "cli"))
    assert os.path.isabs(doc["manifest"])
    assert (repo.root / "state-out/default/state.json").is_file()


@pytest.mark.slow
def test_live_output_is_echoed_on_a_terminal_without_the_live_view(repo: Repo) -> None:
    import pty
    import subprocess
    import sys

    repo.pipeline({"id": "talk", "command": "echo live-line-1; sleep 0.3; echo live-line-2 >&2"})
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "codex_orchestrator", "start"],
        cwd=repo.root,
        env={**repo.env, "TERM": "dumb"},
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=30)
    os.close(controller)
    assert proc.returncode == 0
    assert b"live-line-1" in seen and b"live-line-2" in seen


def test_review_refuses_a_live_run_and_leaves_its_manifest_alone(repo: Repo) -> None:
    import time

    repo.pipeline({"id": "long", "command": "sleep 30"})
    proc = repo.spawn("start")
    try:
        cli_dir = repo.root / ".runs/default/cli"
        deadline = time.monotonic() + 20
        while not list(cli_dir.glob("*/.heartbeat")) and time.monotonic() < deadline:
            time.sleep(0.05)
        [run_dir] = list(cli_dir.iterdir())
        result = repo.cli("review", run_dir.name)
        assert result.returncode == 2 and "still in_progress" in result.stderr
        assert not (run_dir / "review.md").exists()
        assert "reviews" not in json.loads((run_dir / "manifest.json").read_text())
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 143


def test_stage_environment_names_the_run(repo: Repo) -> None:
    import sys

    names = [
        "MCP_RUNNER_TASK_ID",
        "CODEX_ORCHESTRATOR_TASK_ID",
        "CODEX_ORCHESTRATOR_RUN_ID",
        "CODEX_ORCHESTRATOR_PIPELINE_ID",
        "CODEX_ORCHESTRATOR_MANIFEST_PATH",
        "CODEX_ORCHESTRATOR_RUN_DIR",
        "CODEX_ORCHESTRATOR_ROOT",
        "CODEX_ORCHESTRATOR_PYTHON",
    ]
    repo.pipeline({"id": "env", "command": " && ".join(f'echo "{name}=${name}"' for name in names)})
    code, doc = repo.start_json("--task", "t1")
    assert code == 0
    log = repo.root / repo.manifest(doc)["commands"][0]["log_path"]
    seen = dict(line.split("=", 1) for line in log.read_text().splitlines())
    run_dir = repo.root / doc["artifact_root"]
    assert seen == {
        "MCP_RUNNER_TASK_ID": "t1",
        "CODEX_ORCHESTRATOR_TASK_ID": "t1",
        "CODEX_ORCHESTRATOR_RUN_ID": doc["run_id"],
        "CODEX_ORCHESTRATOR_PIPELINE_ID": "main",
        "CODEX_ORCHESTRATOR_MANIFEST_PATH": str(run_dir / "manifest.json"),
        "CODEX_ORCHESTRATOR_RUN_DIR": str(run_dir),
        "CODEX_ORCHESTRATOR_ROOT": str(repo.root),
        "CODEX_ORCHESTRATOR_PYTHON": sys.executable,
    }


def test_missing_tool_is_skipped_and_shown_by_plan(repo: Repo) -> None:
    (repo.root / "package.json").write_text('{"scripts": {"lint": "eslint ."}}')
    env = {"PATH": "/nonexistent-bin"}
    plan = json.loads(repo.cli("plan", "diagnostics", "--format", "json", env=env).stdout)
    lint = next(stage for stage in plan["stages"] if stage["id"] == "lint")
    assert lint["skip_reason"] == "skipped: npm not found on PATH"
    code, doc = repo.start_json("diagnostics", env=env)
    commands = {command["id"]: command for command in repo.manifest(doc)["commands"]}
    assert commands["lint"]["status"] == "skipped"
    assert commands["lint"]["summary"] == "skipped: npm not found on PATH"
    assert code == 3 and doc["status"] == "skipped"  # nothing could run: not a success
