"""``review``: write ``review.md``, record the hand-off, use ``codex review`` when present."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import cli_env
from evidence.helpers import assert_usage_error, cli, cli_json, write, write_manifest

TASK = "0400-review"
OLD_RUN = "2025-11-01T00-00-00-000Z-aaaaaaaa"
NEW_RUN = "2025-11-02T00-00-00-000Z-bbbbbbbb"


def _failed_run(root: Path, run_id: str = NEW_RUN) -> Path:
    """A failed run whose second stage has an error file; its manifest path."""
    run_dir = f".runs/{TASK}/cli/{run_id}"
    error_file = f"{run_dir}/errors/02-test.json"
    stderr = "".join(f"line {n}\n" for n in range(100)) + "boom ```fenced```\n"
    write(
        root,
        error_file,
        json.dumps(
            {
                "reason": "command-failed",
                "details": {"exit_code": 1, "stderr": stderr, "stdout": ""},
            }
        ),
    )
    commands = [
        {
            "index": 1,
            "id": "build",
            "title": "Build",
            "status": "succeeded",
            "exit_code": 0,
            "summary": "built",
            "log_path": f"{run_dir}/commands/01-build.stdout.log",
            "error_file": None,
        },
        {
            "index": 2,
            "id": "test",
            "title": "Test",
            "status": "failed",
            "exit_code": 1,
            "summary": "boom",
            "log_path": f"{run_dir}/commands/02-test.stdout.log",
            "stderr_log_path": f"{run_dir}/commands/02-test.stderr.log",
            "error_file": error_file,
        },
        {
            "index": 3,
            "id": "spec-guard",
            "title": "Spec guard",
            "status": "pending",
            "exit_code": None,
            "summary": None,
            "log_path": None,
            "error_file": None,
        },
    ]
    summary = (
        "Pipeline diagnostics failed at stage test: boom\n"
        "Stages: 1 succeeded\n"
        "Guardrails: skipped (spec-guard: pending)"
    )
    return root / write_manifest(
        root, TASK, run_id, status="failed", commands=commands, summary=summary
    )


def _manifest(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_review_of_the_newest_run(tmp_path: Path) -> None:
    write_manifest(tmp_path, TASK, OLD_RUN)
    manifest = _failed_run(tmp_path)
    result = cli(tmp_path, "review", MCP_RUNNER_TASK_ID=TASK)
    assert result.returncode == 0, result.stderr
    review_md = (manifest.parent / "review.md").read_text()
    assert result.stdout == review_md
    assert f"run {NEW_RUN}" in review_md
    assert "- Status: **failed (stage:test:failed)**" in review_md
    assert "1. `build` Build — succeeded, exit 0: built" in review_md
    assert "2. `test` Test — failed, exit 1: boom" in review_md
    assert "line 99\nboom ```fenced```\n````" in review_md and "line 69\n" not in review_md
    assert "\nGuardrails: skipped (spec-guard: pending)\n" in review_md
    assert f"- Manifest: `.runs/{TASK}/cli/{NEW_RUN}/manifest.json`" in review_md
    assert "02-test.stderr.log" in review_md and "errors/02-test.json" in review_md
    (entry,) = _manifest(manifest)["reviews"]
    assert entry["mode"] == "builtin" and entry["exit_code"] == 0
    assert entry["review_path"] == f".runs/{TASK}/cli/{NEW_RUN}/review.md"
    assert entry["requested_at"].endswith("Z")


def test_review_of_a_named_run_in_json_appends_to_reviews(tmp_path: Path) -> None:
    manifest = _failed_run(tmp_path)
    old = tmp_path / write_manifest(tmp_path, TASK, OLD_RUN)
    for _ in range(2):
        code, document = cli_json(tmp_path, "review", OLD_RUN)
        assert code == 0
    assert document["run_id"] == OLD_RUN and document["status"] == "succeeded"
    assert document["mode"] == "builtin" and document["review"].startswith("# Review")
    assert len(_manifest(old)["reviews"]) == 2
    assert "reviews" not in _manifest(manifest)
    code, document = cli_json(tmp_path, "review", "--task", TASK, "--run", NEW_RUN)
    assert code == 0 and document["run_id"] == NEW_RUN


def test_review_hands_the_manifest_to_codex_when_present(tmp_path: Path) -> None:
    manifest = _failed_run(tmp_path)
    bin_dir = tmp_path / "bin"
    codex = write(bin_dir, "codex", '#!/bin/sh\necho "codex $*"\necho "codex err" >&2\nexit 3\n')
    codex.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{cli_env(tmp_path)['PATH']}"
    result = cli(tmp_path, "review", "--task", TASK, PATH=path)
    relative = f".runs/{TASK}/cli/{NEW_RUN}/manifest.json"
    assert result.returncode == 3
    assert f"codex review {relative}" in result.stdout
    code, document = cli_json(tmp_path, "review", "--task", TASK, PATH=path)
    assert (code, document["mode"], document["exit_code"]) == (3, "codex", 3)
    modes = [(r["mode"], r["exit_code"]) for r in _manifest(manifest)["reviews"]]
    assert modes == [("codex", 3), ("codex", 3)]
    assert (manifest.parent / "review.md").exists()


@pytest.mark.slow
def test_review_bad_input(tmp_path: Path) -> None:
    assert_usage_error(cli(tmp_path, "review", "--task", TASK), f"task {TASK} has no runs")
    assert_usage_error(cli(tmp_path, "review", "2025-01-01T00-00-00-000Z-00000000"), "unknown run")
    assert_usage_error(cli(tmp_path, "review", "../x"), "invalid run id")
    assert_usage_error(cli(tmp_path, "review", "--task", "a/b"), "invalid task id")
    manifest = _failed_run(tmp_path)
    assert_usage_error(cli(tmp_path, "review", NEW_RUN, "--task", "0401-other"), "unknown run")
    manifest.write_text("{torn")
    assert_usage_error(cli(tmp_path, "review", NEW_RUN), "cannot be parsed")
    assert manifest.read_text() == "{torn"
    assert not (manifest.parent / "review.md").exists()
