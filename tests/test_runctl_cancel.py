"""``cancel`` and ``start/resume --detach`` through the real CLI, across processes and sessions."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo
from helpers.lock_holder import lock_held_by_no_process
from helpers.processes import alive, signal_recorded_pid, wait_for
from helpers.runctl import (
    json_cli,
    kill_group,
    kill_run_groups,
    manifest_of,
    metrics_lines,
    run_dirs,
    state_entries,
    try_manifest,
)

# The stage records its pid, then waits for a marker file (or up to 60 s).
WAITING_STAGE = "echo $$ > {pids}; i=0; while [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; echo finished"


def _config(repo: Repo) -> None:
    stage = WAITING_STAGE.format(pids=repo.root / "stage.pid", go=repo.root / "go")
    repo.write_config(
        {
            "defaultPipeline": "wait",
            "settings": {"kill_grace_seconds": 1},
            "pipelines": [
                {
                    "id": "wait",
                    "stages": [
                        {"id": "first", "command": "echo one"},
                        {"id": "block", "command": stage},
                    ],
                },
                {
                    "id": "family",
                    "stages": [{"id": "kid", "kind": "subpipeline", "pipeline": "wait"}],
                },
            ],
        }
    )


def _stage_running(repo: Repo, task: str) -> Path:
    """Wait until the task's newest run has its blocking stage running; return the run dir."""

    def running() -> bool:
        dirs = run_dirs(repo, task)
        manifest = try_manifest(dirs[-1]) if dirs else None
        return (
            manifest is not None
            and any(
                c["status"] == "running" and c["id"] == "block"
                for c in _all_commands(repo, manifest)
            )
            and (repo.root / "stage.pid").exists()
        )

    wait_for(running, what="the blocking stage to run")
    return run_dirs(repo, task)[0]


def _all_commands(repo: Repo, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    commands = list(manifest["commands"])
    for link in manifest.get("child_runs", []):
        child = try_manifest(repo.root / Path(link["manifest"]).parent)
        commands += _all_commands(repo, child) if child else []
    return commands


def _stage_pid(repo: Repo) -> int:
    return int((repo.root / "stage.pid").read_text())


def _assert_cancelled(
    manifest: dict[str, Any], actor: str | None = None, reason: str | None = None
) -> None:
    assert manifest["status"] == "cancelled" and manifest["status_detail"] == "cancelled", manifest
    [event] = manifest["cancel_events"]
    assert event["timestamp"] and event["recorded_at"]
    if actor is not None:
        assert event["actor"] == actor and event["reason"] == reason
    assert manifest["metrics_recorded"] is True


def test_cancel_foreground_run_from_another_process(repo: Repo) -> None:
    _config(repo)
    proc = repo.spawn("start", "--task", "fg")
    try:
        run_dir = _stage_running(repo, "fg")
        stage_pid = _stage_pid(repo)
        began = time.monotonic()
        code, document = json_cli(
            repo, "cancel", run_dir.name, "--wait", "--actor", "ops", "--reason", "runaway"
        )
        elapsed = time.monotonic() - began
        assert code == 0, document
        assert document["action"] == "signalled" and document["ended"] is True
        assert document["status"] == "cancelled" and document["status_detail"] == "cancelled"
        assert elapsed < 1 + 5
        assert proc.wait(timeout=30) == 143
        _assert_cancelled(manifest_of(run_dir), "ops", "runaway")
        assert not alive(stage_pid)
        assert [c["status"] for c in manifest_of(run_dir)["commands"]] == ["succeeded", "failed"]
        assert state_entries(repo, "fg")[run_dir.name]["status"] == "cancelled"
        assert [line["status"] for line in metrics_lines(repo, "fg")] == ["cancelled"]
        assert not (run_dir / "cancel-request.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for run_dir in run_dirs(repo, "fg"):
            kill_run_groups(run_dir)


@pytest.mark.slow
def test_detached_run_survives_hangup_of_the_caller_and_leaves_full_records(repo: Repo) -> None:
    _config(repo)
    # The caller: a shell in its own session that starts the run detached, then lingers.
    caller = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            f'"{sys.executable}" -m codex_orchestrator start --task det --detach --format json > detach.json; sleep 60',
        ],
        cwd=repo.root,
        env=repo.env,
        start_new_session=True,
        # a caller started under nohup would ignore the hang-up; a terminal's shell does not
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    try:
        wait_for(
            lambda: (
                (repo.root / "detach.json").stat().st_size > 0
                if (repo.root / "detach.json").exists()
                else False
            )
        )
        document = json.loads((repo.root / "detach.json").read_text())
        assert document["status"] in ("queued", "in_progress") and document["detached"] is True
        run_dir = repo.root / document["artifact_root"]
        _stage_running(repo, "det")
        os.killpg(caller.pid, signal.SIGHUP)  # the caller's terminal hangs up
        assert caller.wait(timeout=10) != 0
        time.sleep(0.3)
        assert manifest_of(run_dir)["status"] == "in_progress"
        orchestrator = manifest_of(run_dir)["orchestrator_pid"]
        assert alive(orchestrator) and os.getsid(orchestrator) != os.getsid(0)
        holder = json.loads((run_dir / ".driver.lock").read_text())
        assert holder["pid"] == orchestrator  # the detached child holds the run's driver lock
        refused = repo.cli("resume", document["run_id"], "--force")
        assert refused.returncode == 2 and "still alive" in refused.stderr
        (repo.root / "go").touch()
        wait_for(lambda: not alive(orchestrator), what="the detached orchestrator to exit")
    finally:
        if caller.poll() is None:
            os.killpg(caller.pid, signal.SIGKILL)
            caller.wait()
        (repo.root / "go").touch()
        for path in run_dirs(repo, "det"):
            kill_run_groups(path)
    manifest = manifest_of(run_dir)
    assert manifest["exit_code"] == 0 and manifest["metrics_recorded"] is True
    assert (run_dir / "run-summary.json").exists() and (run_dir / "orchestrator.log").exists()
    assert "succeeded" in (run_dir / "orchestrator.log").read_text()
    assert state_entries(repo, "det")[run_dir.name]["status"] == "succeeded"
    assert [line["run_id"] for line in metrics_lines(repo, "det")] == [run_dir.name]
    (repo.root / "stage.pid").unlink()
    code, foreground = repo.start_json("--task", "fg2")
    assert code == 0
    assert repo.manifest(foreground).keys() == manifest.keys()


@pytest.mark.slow
def test_detach_validates_first_and_starts_nothing_on_bad_input(repo: Repo) -> None:
    _config(repo)
    for args in (
        ("nope", "--detach"),
        ("--detach", "--task", "a/b"),
        ("--detach", "--parent-run", "2026-01-01T00-00-00-000Z-00000000"),
    ):
        result = repo.cli("start", *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (args, result.stderr)
    assert not (repo.root / ".runs").exists() or not any(
        (repo.root / ".runs").rglob("manifest.json")
    )


@pytest.mark.slow
def test_cancel_detached_run_leaves_no_process(repo: Repo) -> None:
    _config(repo)
    code, document = json_cli(repo, "start", "--task", "dc", "--detach")
    assert code == 0
    run_dir = repo.root / document["artifact_root"]
    try:
        _stage_running(repo, "dc")
        orchestrator, stage_pid = manifest_of(run_dir)["orchestrator_pid"], _stage_pid(repo)
        code, cancelled = json_cli(repo, "cancel", document["run_id"], "--wait")
        assert code == 0 and cancelled["ended"] is True
        _assert_cancelled(manifest_of(run_dir))
        wait_for(
            lambda: not alive(orchestrator) and not alive(stage_pid),
            timeout=10,
            what="no process left",
        )
    finally:
        kill_run_groups(run_dir)


@pytest.mark.slow
def test_cancel_run_with_a_child_run_cancels_both(repo: Repo) -> None:
    _config(repo)
    proc = repo.spawn("start", "family", "--task", "fam")
    try:
        _stage_running(repo, "fam")
        parent_dir, child_dir = run_dirs(repo, "fam")
        assert manifest_of(child_dir)["parent_run_id"] == parent_dir.name
        code, document = json_cli(repo, "cancel", parent_dir.name, "--wait", "--reason", "stop all")
        assert code == 0 and document["children"] == [child_dir.name]
        assert proc.wait(timeout=30) == 143
        _assert_cancelled(
            manifest_of(parent_dir),
            reason="stop all",
            actor=document and manifest_of(parent_dir)["cancel_events"][0]["actor"],
        )
        _assert_cancelled(manifest_of(child_dir))
        assert manifest_of(parent_dir)["child_runs"][0]["status"] == "cancelled"
        assert not alive(_stage_pid(repo))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for run_dir in run_dirs(repo, "fam"):
            kill_run_groups(run_dir)


@pytest.mark.slow
def test_dead_detached_run_is_stale_then_cancel_finishes_it(repo: Repo) -> None:
    _config(repo)
    code, document = json_cli(repo, "start", "family", "--task", "dead", "--detach")
    assert code == 0
    parent_dir = repo.root / document["artifact_root"]
    try:
        _stage_running(repo, "dead")
        stage_pid = _stage_pid(repo)
        orchestrator = manifest_of(parent_dir)["orchestrator_pid"]
        signal_recorded_pid(orchestrator, signal.SIGKILL)  # recorded pid of the run started here
        wait_for(
            lambda: all(
                row["stale"] for row in json_cli(repo, "runs", "--task", "dead")[1]["runs"]
            ),
            what="both runs to show stale",
        )
        status = json_cli(repo, "status", document["run_id"])[1]
        assert status["stale"] or "resume" in status.get("hint", "")
        assert alive(stage_pid)  # the dead run's stage is still running
        code, cancelled = json_cli(repo, "cancel", document["run_id"], "--reason", "dead")
        assert code == 0 and cancelled["action"] == "finished" and cancelled["ended"] is True
        wait_for(lambda: not alive(stage_pid), timeout=10, what="the left-over stage to end")
        for run_dir in run_dirs(repo, "dead"):
            _assert_cancelled(manifest_of(run_dir))
            assert (run_dir / "run-summary.json").exists()
        assert {e["status"] for e in state_entries(repo, "dead").values()} == {"cancelled"}
        assert len(metrics_lines(repo, "dead")) == 2
    finally:
        for run_dir in run_dirs(repo, "dead"):
            kill_run_groups(run_dir)


@pytest.mark.slow
def test_dead_detached_run_can_be_resumed(repo: Repo) -> None:
    _config(repo)
    code, document = json_cli(repo, "start", "--task", "again", "--detach")
    run_dir = repo.root / document["artifact_root"]
    try:
        _stage_running(repo, "again")
        signal_recorded_pid(manifest_of(run_dir)["orchestrator_pid"], signal.SIGKILL)
        wait_for(
            lambda: json_cli(repo, "runs", "--task", "again")[1]["runs"][0]["stale"], what="stale"
        )
        (repo.root / "go").touch()
        code, resumed = json_cli(repo, "resume", document["run_id"], "--detach")
        assert code == 0 and resumed["detached"] is True
        wait_for(
            lambda: manifest_of(run_dir)["status"] == "succeeded", what="the resumed run to finish"
        )
        assert [c["status"] for c in manifest_of(run_dir)["commands"]] == ["succeeded", "succeeded"]
    finally:
        kill_run_groups(run_dir)


@pytest.mark.slow
def test_cancel_finished_run_changes_nothing(repo: Repo) -> None:
    repo.pipeline({"id": "quick", "command": "true"})
    code, document = repo.start_json("--task", "done")
    manifest_path = repo.root / document["manifest"]
    before = manifest_path.read_bytes()
    result = repo.cli("cancel", document["run_id"])
    assert result.returncode == 0 and "already ended" in result.stdout
    code, again = json_cli(repo, "cancel", document["run_id"], "--wait")
    assert code == 0 and again["action"] == "already-ended" and again["status"] == "succeeded"
    assert manifest_path.read_bytes() == before
    assert not (manifest_path.parent / "cancel-request.json").exists()


@pytest.mark.slow
def test_cancel_never_signals_a_pid_whose_start_time_does_not_match(repo: Repo) -> None:
    repo.pipeline({"id": "quick", "command": "true"})
    code, document = repo.start_json("--task", "reuse")
    manifest_path = repo.root / document["manifest"]
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        manifest = json.loads(manifest_path.read_text())
        manifest.update(status="in_progress", completed_at=None, orchestrator_pid=bystander.pid)
        manifest["orchestrator_start_ticks"] = manifest.get("orchestrator_start_ticks", 0) + 1
        manifest_path.write_text(json.dumps(manifest))
        code, cancelled = json_cli(repo, "cancel", document["run_id"])
        assert (
            code == 0 and cancelled["action"] == "finished" and cancelled["signalled_pid"] is None
        )
        time.sleep(0.2)
        assert bystander.poll() is None and alive(bystander.pid)
        assert json.loads(manifest_path.read_text())["status"] == "cancelled"
    finally:
        kill_group(bystander.pid)
        bystander.wait()


@pytest.mark.slow
def test_cancel_does_not_signal_a_driver_it_cannot_verify(repo: Repo) -> None:
    """A run whose driver lock no process here can be shown to hold (as when it is held from
    another host) is not signalled: the request is recorded, exit 1."""
    repo.pipeline({"id": "quick", "command": "true"})
    code, document = repo.start_json("--task", "remote")
    manifest_path = repo.root / document["manifest"]
    manifest = json.loads(manifest_path.read_text())
    manifest.update(status="in_progress", completed_at=None, host="elsewhere.example")
    manifest_path.write_text(json.dumps(manifest))
    holder = {"pid": os.getpid(), "start_ticks": 1, "host": "elsewhere.example"}
    with lock_held_by_no_process(manifest_path.parent / ".driver.lock", holder):
        code, result = json_cli(repo, "cancel", document["run_id"], "--reason", "remote")
        assert code == 1 and result["action"] == "requested" and result["signalled_pid"] is None
        [request] = json.loads((manifest_path.parent / "cancel-request.json").read_text())[
            "requests"
        ]
        assert request["reason"] == "remote"
        assert json.loads(manifest_path.read_text())["status"] == "in_progress"


def test_detached_run_ends_a_daemon_its_stage_left(repo: Repo) -> None:
    """The detached driver is a subreaper too: a double-forked daemon ends with the run."""
    repo.pipeline(
        {
            "id": "daemon",
            "command": "( setsid sh -c 'echo $$ >> pids; exec sleep 300' > /dev/null 2>&1 & ) ; "
            "while [ ! -s pids ]; do sleep 0.01; done",
        }
    )
    code, document = json_cli(repo, "start", "--task", "daemon", "--detach")
    assert code == 0
    run_dir = repo.root / document["artifact_root"]
    pids: list[int] = []
    try:
        wait_for(lambda: manifest_of(run_dir)["status"] == "succeeded", what="the run to end")
        pids = [int(word) for word in (repo.root / "pids").read_text().split()]
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10, what="the daemon to end")
    finally:
        if not pids and (repo.root / "pids").exists():  # the run never got to succeed
            pids = [int(word) for word in (repo.root / "pids").read_text().split()]
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_cancel_wait_gives_up_after_grace_plus_5s(repo: Repo) -> None:
    """A stopped orchestrator cannot act on SIGTERM: --wait exits 1 at its bound; once the
    orchestrator continues, the run ends cancelled as requested."""
    _config(repo)
    code, document = json_cli(repo, "start", "--task", "stopped", "--detach")
    run_dir = repo.root / document["artifact_root"]
    orchestrator = None
    try:
        _stage_running(repo, "stopped")
        orchestrator = manifest_of(run_dir)["orchestrator_pid"]
        signal_recorded_pid(orchestrator, signal.SIGSTOP)
        began = time.monotonic()
        code, result = json_cli(repo, "cancel", document["run_id"], "--wait")
        elapsed = time.monotonic() - began
        assert code == 1 and result["action"] == "signalled" and result["ended"] is False
        assert 1 + 5 <= elapsed < 1 + 5 + 30  # generous: a loaded machine starts slowly
        signal_recorded_pid(orchestrator, signal.SIGCONT)
        wait_for(
            lambda: manifest_of(run_dir)["status"] in ("succeeded", "failed", "cancelled"),
            timeout=60,
            what="the run to end",
        )
        _assert_cancelled(manifest_of(run_dir))
    finally:
        if orchestrator is not None:
            with contextlib.suppress(ProcessLookupError):  # gone already: nothing to resume
                signal_recorded_pid(orchestrator, signal.SIGCONT)
        kill_run_groups(run_dir)
