"""The wording of what CLI commands print, through the real CLI: no prefix said twice (a
stage summary repeating its status or id, a status detail repeating the status), plurals that
agree with their count, and a pointer to the stage output rather than to the event log."""

from __future__ import annotations

import json
import re

import pytest

from conftest import Repo

STAGE_LINE = re.compile(r"^\s+\d+\. (\S+)\s+(\S+)\s+(.*)$")


def _stage_lines(text: str) -> list[tuple[str, str, str]]:
    return [match.groups() for line in text.splitlines() if (match := STAGE_LINE.match(line))]


@pytest.mark.slow
def test_start_and_status_say_each_thing_once(repo: Repo) -> None:
    # the built-in diagnostics in an empty repository: stages skipped with a reason
    # ("skipped: no build step found") and the spec guard ("spec-guard: ...")
    started = repo.cli("start", "diagnostics")
    status = repo.cli("status")
    for output in (started.stdout, status.stdout):
        stages = _stage_lines(output)
        assert {stage_id for stage_id, _, _ in stages} >= {"build", "spec-guard"}, output
        for stage_id, stage_status, summary in stages:
            assert not summary.startswith((f"{stage_status}:", f"{stage_id}:")), output
        assert not [line for line in output.splitlines() if line.startswith("log:")]
    run_id = json.loads(repo.cli("status", "--format", "json").stdout)["run_id"]
    logs_line = next(line for line in status.stdout.splitlines() if line.startswith("stage "))
    directory = logs_line.split()[2]
    assert logs_line.endswith(f"(print them: codex-orchestrator logs {run_id})")
    assert (repo.root / directory).is_dir() and directory.endswith(f"{run_id}/commands/")


@pytest.mark.slow
def test_a_cancelled_run_is_cancelled_once_and_plurals_agree(repo: Repo) -> None:
    repo.pipeline({"id": "nap", "command": "sleep 30"})
    started = repo.cli("start", "--detach", "--format", "json")
    run_id = json.loads(started.stdout)["run_id"]
    cancelled = repo.cli("cancel", "@last", "--wait")
    assert cancelled.returncode == 0, cancelled.stderr
    first = repo.cli("status", run_id).stdout.splitlines()[0]
    assert first.endswith(": cancelled"), first
    dry = repo.cli("prune", "--keep", "0", "--dry-run").stdout.splitlines()[-1]
    assert dry.startswith("dry run: 1 run would be removed"), dry
    stats = repo.cli("stats").stdout
    assert "1 run," in stats and "1 runs" not in stats, stats
