"""No pid is ever signalled unless the kernel shows it is the run's own driver, and only the run
that was asked for is cancelled (`liveness.driver_state`, `driver.signal_driver`,
`cancelrequest`).

A lock file and a manifest are files anyone who can write the run directory can plant: the pid,
start time and host they hold are never enough to signal a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo
from helpers.lock_holder import lock_held_by_no_process
from helpers.processes import alive, wait_for
from helpers.runctl import (
    json_cli,
    kill_group,
    kill_run_groups,
    manifest_of,
    run_dirs,
    try_manifest,
)

BLOCK = "echo $$ > {pid}; i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
# Holds the driver lock of the run directory it is given and writes a bystander's pid into it.
FORGER = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, json.dumps(json.loads(sys.argv[2])).encode(), 0)
print("held", flush=True)
time.sleep(60)
"""


def _start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _host() -> str:
    return os.uname().nodename


def _ended_run(repo: Repo, task: str) -> tuple[str, Path]:
    """A finished run made to look in progress again (its driver is whatever the test plants)."""
    repo.pipeline({"id": "quick", "command": "true"})
    code, document = repo.start_json("--task", task)
    assert code == 0
    run_dir = repo.root / document["artifact_root"]
    manifest = manifest_of(run_dir)
    manifest.update(status="in_progress", completed_at=None)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return str(document["run_id"]), run_dir


def _bystander() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def _holder_naming(pid: int) -> dict[str, Any]:
    return {"pid": pid, "start_ticks": _start_ticks(pid), "host": _host()}


@pytest.mark.slow
def test_pids_a_lock_file_naming_a_live_process_never_gets_it_signalled(repo: Repo) -> None:
    """The driver lock is held, its file names a bystander with the bystander's true start time
    and this host; no process here holds the lock: nothing is signalled."""
    run_id, run_dir = _ended_run(repo, "planted")
    bystander = _bystander()
    try:
        with lock_held_by_no_process(run_dir / ".driver.lock", _holder_naming(bystander.pid)):
            code, result = json_cli(repo, "cancel", run_id)
            text = repo.cli("cancel", run_id)
            status = json.loads(repo.cli("status", run_id, "--format", "json").stdout)
        time.sleep(0.3)
        assert code == 1 and result["action"] == "requested", result
        assert result["signalled_pid"] is None
        assert text.returncode == 1 and "(unverified)" in text.stdout, text.stdout
        assert alive(bystander.pid) and bystander.poll() is None
        assert status["orchestrator_gone"] is False  # a held lock is never a dead driver
    finally:
        kill_group(bystander.pid)
        bystander.wait()


def test_pids_only_the_process_holding_the_lock_is_the_driver(repo: Repo) -> None:
    """A process holds the driver lock and writes a bystander's pid into it: the kernel names
    the holder, and only the holder is ever signalled."""
    run_id, run_dir = _ended_run(repo, "forged")
    bystander = _bystander()
    record = json.dumps(_holder_naming(bystander.pid))
    forger = subprocess.Popen(
        [sys.executable, "-c", FORGER, str(run_dir / ".driver.lock"), record],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert forger.stdout is not None and forger.stdout.readline() == b"held\n"
        _, result = json_cli(repo, "cancel", run_id)
        assert result["action"] == "signalled" and result["signalled_pid"] == forger.pid, result
        assert forger.wait(timeout=10) != 0  # woken without a handler for it: it ended
        assert alive(bystander.pid) and bystander.poll() is None
    finally:
        for process in (forger, bystander):
            kill_group(process.pid)
            process.wait()


@pytest.mark.slow
def test_pids_a_manifest_without_a_lock_never_gets_its_recorded_pid_signalled(
    repo: Repo,
) -> None:
    """A run recorded before driver locks existed names its driver only in the manifest, which
    anyone can plant: that pid is never signalled, whatever start time and host it records."""
    run_id, run_dir = _ended_run(repo, "legacy")
    (run_dir / ".driver.lock").unlink()
    bystander = _bystander()
    try:
        manifest = manifest_of(run_dir)
        manifest.update(
            orchestrator_pid=bystander.pid,
            orchestrator_start_ticks=_start_ticks(bystander.pid),
            host=_host(),
        )
        (run_dir / "manifest.json").write_text(json.dumps(manifest))
        code, result = json_cli(repo, "cancel", run_id)
        time.sleep(0.3)
        assert code == 1 and result["action"] == "requested" and result["signalled_pid"] is None
        assert alive(bystander.pid) and bystander.poll() is None
    finally:
        kill_group(bystander.pid)
        bystander.wait()


def _family(repo: Repo, *, graph: bool) -> None:
    """A parent whose child run (an optional sub-pipeline, or one of a graph's branches)
    blocks until cancelled, and a stage that must still run after it."""
    child_stage: dict[str, Any] = {"id": "kid", "kind": "subpipeline", "pipeline": "wait"}
    stages: list[dict[str, Any]] = [{"id": "first", "command": "echo one"}]
    if graph:
        child_stage["needs"] = ["first"]
        stages += [
            child_stage,
            {"id": "sibling", "command": "sleep 0.5; echo sibling-done", "needs": ["first"]},
        ]
    else:
        child_stage["optional"] = True
        stages += [child_stage, {"id": "after", "command": "echo after-child"}]
    repo.write_config(
        {
            "defaultPipeline": "family",
            "settings": {"kill_grace_seconds": 1},
            "pipelines": [
                {"id": "family", "stages": stages},
                {
                    "id": "wait",
                    "stages": [
                        {"id": "block", "command": BLOCK.format(pid=repo.root / "block.pid")}
                    ],
                },
            ],
        }
    )


def _child_blocking(repo: Repo, task: str) -> tuple[Path, Path]:
    """(parent run dir, child run dir) once the child's blocking stage runs."""

    def found() -> tuple[Path, Path] | None:
        for run_dir in run_dirs(repo, task):
            manifest = try_manifest(run_dir)
            if (
                manifest
                and manifest.get("parent_run_id")
                and manifest["commands"][0]["status"] == "running"
                and (repo.root / "block.pid").exists()
            ):
                return run_dir.parent / manifest["parent_run_id"], run_dir
        return None

    found_dirs: tuple[Path, Path] = wait_for(found, what="the child run's stage to block")
    return found_dirs


def _cancel_child_only(repo: Repo, *, graph: bool) -> tuple[dict[str, Any], dict[str, Any], int]:
    _family(repo, graph=graph)
    task = "graph" if graph else "seq"
    proc = repo.spawn("start", "--task", task, "--format", "json")
    parent_dir = child_dir = None
    try:
        parent_dir, child_dir = _child_blocking(repo, task)
        code, result = json_cli(
            repo, "cancel", child_dir.name, "--wait", "--actor", "ops", "--reason", "only-kid"
        )
        assert code == 0 and result["action"] == "signalled", result
        assert result["signalled_pid"] == proc.pid  # the parent's process drives the child
        exit_code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for run_dir in (parent_dir, child_dir):
            if run_dir is not None:
                kill_run_groups(run_dir)
    assert parent_dir is not None and child_dir is not None
    child = manifest_of(child_dir)
    assert child["status"] == "cancelled" and child["status_detail"] == "cancelled", child
    [event] = child["cancel_events"]
    assert event["actor"] == "ops" and event["reason"] == "only-kid"
    assert not (child_dir / "cancel-request.json").exists()
    parent = manifest_of(parent_dir)
    assert not parent.get("cancel_events"), parent
    return parent, child, exit_code


@pytest.mark.slow
def test_cancel_of_an_optional_child_run_cancels_that_child_only(repo: Repo) -> None:
    parent, _, exit_code = _cancel_child_only(repo, graph=False)
    assert exit_code == 0 and parent["status"] == "succeeded", parent
    stages = {entry["id"]: entry for entry in parent["commands"]}
    assert stages["kid"]["status"] == "skipped" and "cancelled" in stages["kid"]["summary"]
    assert stages["after"]["status"] == "succeeded"  # the parent went on


@pytest.mark.slow
def test_cancel_of_a_child_run_in_a_graph_leaves_the_other_branches_be(repo: Repo) -> None:
    parent, _, exit_code = _cancel_child_only(repo, graph=True)
    assert exit_code == 1 and parent["status"] == "failed", parent
    assert parent["status_detail"] == "stage:kid:failed"  # failed, not cancelled
    stages = {entry["id"]: entry for entry in parent["commands"]}
    assert stages["sibling"]["status"] == "succeeded" and stages["kid"]["status"] == "failed"
