"""``report``: the HTML a run and a task get, built from real runs, and its bad inputs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from codex_orchestrator.view.attempts import Attempt
from codex_orchestrator.view.timeline import render_timeline
from conftest import Repo
from helpers.report import HOSTILE, edit_manifest, failed_then_resumed_run, report


@pytest.mark.slow
def test_run_report_holds_every_section_and_escapes_run_text(repo: Repo) -> None:
    run_id, run_dir = failed_then_resumed_run(repo)
    edit_manifest(
        run_dir,
        cancel_events=[
            {"timestamp": "2026-01-01T00:00:00.000Z", "actor": "ops", "reason": HOSTILE}
        ],
    )
    code, stdout, stderr = report(repo, run_id)
    assert code == 0, stderr
    assert stdout.strip() == f".runs/default/cli/{run_id}/report.html"
    html = (run_dir / "report.html").read_text()
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()  # no script at all: the page needs none
    for heading in (
        "Timeline",
        "Stages",
        "Error files",
        "Logs (last 200 lines)",
        "Resume events",
        "Cancel events",
    ):
        assert f"<h2>{heading}</h2>" in html
    # build once, flaky twice (failed, then succeeded on resume), tail once
    bars = re.findall(r'data-stage="([^"]+)" data-attempt="(\d+)" data-status="([^"]+)"', html)
    assert bars == [
        ("build", "1", "succeeded"),
        ("flaky", "1", "failed"),
        ("flaky", "2", "succeeded"),
        ("tail", "1", "succeeded"),
    ]
    assert 'href="commands/02-flaky.attempt-2.stdout.log"' in html
    assert 'href="commands/02-flaky.stderr.log"' in html
    assert 'href="errors/02-flaky.json"' in html and 'href="manifest.json"' in html
    assert "tester&lt;script&gt;" in html and "retry" in html  # the resume event
    assert "ops" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html


@pytest.mark.slow
def test_log_section_shows_the_last_200_lines(repo: Repo) -> None:
    repo.pipeline({"id": "many", "command": "seq 1 1000"})
    result = repo.cli("start", "--format", "json")
    run_id = json.loads(result.stdout)["run_id"]
    assert report(repo, run_id)[0] == 0
    html = (repo.root / f".runs/default/cli/{run_id}/report.html").read_text()
    block = html.split("commands/01-many.stdout.log</a></h3>")[1].split("</pre>")[0]
    numbers = block.split("<pre>")[1].split("\n")
    assert numbers[0] == "801" and numbers[-1] == "1000" and len(numbers) == 200


@pytest.mark.slow
def test_missing_and_corrupt_files_are_named_in_the_report(repo: Repo, tmp_path: Path) -> None:
    run_id, run_dir = failed_then_resumed_run(repo)
    commands = run_dir / "commands"
    (commands / "01-build.stdout.log").unlink()
    (commands / "03-tail.stdout.log").unlink()
    os.mkfifo(commands / "03-tail.stdout.log")  # a FIFO must not hang the report
    (commands / "02-flaky.stdout.log").unlink()
    outside = tmp_path / "outside.txt"
    outside.write_text("secret-outside-the-run\n")
    (commands / "02-flaky.stdout.log").symlink_to(outside)
    (run_dir / "errors" / "02-flaky.json").write_text("{not json")
    (run_dir / "runner.ndjson").unlink()
    code, _, stderr = report(repo, run_id)
    assert code == 0, stderr
    html = (run_dir / "report.html").read_text()
    assert "<h2>Missing or unreadable</h2>" in html
    assert "log commands/01-build.stdout.log of stage build is missing" in html
    assert (
        "commands/03-tail.stdout.log of stage tail cannot be read (not a regular file (a FIFO))"
        in html
    )
    assert "commands/02-flaky.stdout.log of stage flaky cannot be read (is a symbolic link" in html
    assert "secret-outside-the-run" not in html
    assert "error file errors/02-flaky.json of stage flaky is unreadable or corrupt" in html
    assert "runner.ndjson is missing" in html


@pytest.mark.slow
def test_unknown_run_is_exit_2_with_one_line(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    code, stdout, stderr = report(repo, "2026-01-01T00-00-00-000Z-deadbeef")
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and "unknown run" in stderr and "Traceback" not in stderr
    result = repo.cli("report", "nope", "--format", "json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["exit_code"] == 2
    for bad in (["../etc"], [], ["--task", "no-such-task"]):
        code, _, stderr = report(repo, *bad)
        assert code == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr


def test_corrupt_manifest_is_exit_2_and_left_untouched(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    run_id = json.loads(repo.cli("start", "--format", "json").stdout)["run_id"]
    manifest = repo.root / f".runs/default/cli/{run_id}/manifest.json"
    manifest.write_text("{torn")
    code, _, stderr = report(repo, run_id)
    assert code == 2 and "manifest cannot be parsed" in stderr
    assert manifest.read_text() == "{torn"


def test_settings_report_writes_reports_when_runs_end_with_child_links(repo: Repo) -> None:
    repo.write_config(
        {
            "defaultPipeline": "parent",
            "settings": {"report": True},
            "pipelines": [
                {
                    "id": "parent",
                    "stages": [
                        {"id": "first", "command": "echo parent-stage"},
                        {"kind": "subpipeline", "id": "kid", "pipeline": "child"},
                    ],
                },
                {"id": "child", "stages": [{"id": "inner", "command": "echo child-stage"}]},
            ],
        }
    )
    code, doc = repo.start_json()
    assert code == 0
    run_dir = repo.root / doc["artifact_root"]
    html = (run_dir / "report.html").read_text()
    child_id = repo.manifest(doc)["child_runs"][0]["run_id"]
    assert f'href="../{child_id}/report.html"' in html
    assert "child-stage" in (run_dir.parent / child_id / "report.html").read_text()


def test_settings_report_must_be_a_boolean(repo: Repo) -> None:
    repo.write_config(
        {
            "settings": {"report": "yes"},
            "pipelines": [{"id": "p", "stages": [{"id": "a", "command": "true"}]}],
        }
    )
    result = repo.cli("plan", "p")
    assert result.returncode == 2
    assert "settings.report" in result.stderr and "true or false" in result.stderr


def test_without_the_setting_no_report_is_written(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "true"})
    code, doc = repo.start_json()
    assert code == 0 and not (repo.root / doc["artifact_root"] / "report.html").exists()


@pytest.mark.slow
def test_task_report_lists_runs_from_history_with_links(repo: Repo) -> None:
    repo.pipeline({"id": "a", "command": "echo hi"})
    first = json.loads(repo.cli("start", "--task", "t1", "--format", "json").stdout)["run_id"]
    second = json.loads(repo.cli("start", "--task", "t1", "--format", "json").stdout)["run_id"]
    assert report(repo, second)[0] == 0
    code, stdout, _ = report(repo, "--task", "t1")
    assert code == 0 and stdout.strip() == ".runs/t1/report.html"
    html = (repo.root / ".runs/t1/report.html").read_text()
    assert f'href="cli/{second}/report.html"' in html
    assert f'href="cli/{first}/manifest.json"' in html and "no report yet" in html
    assert html.index(second) < html.index(first)  # newest first
    assert "2 runs recorded" in html


def test_timeline_draws_one_bar_per_attempt_with_parallel_overlap() -> None:
    attempts = [
        Attempt(1, "a", 1, "succeeded", 100.0, 104.0, 0),
        Attempt(2, "b", 1, "failed", 100.5, 101.0, 1),
        Attempt(2, "b", 2, "timed out", 102.0, 103.0, None),
        Attempt(3, "c", 1, "cancelled", 101.0, 103.5, None),
        Attempt(4, "d", 1, "running", 103.0, None, None),
    ]
    svg = render_timeline([(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")], attempts, 100, 105)
    assert svg.count('class="bar"') == 5
    xs = [float(x) for x in re.findall(r'class="bar" x="([\d.]+)"', svg)]
    assert xs[1] < xs[0] + (xs[3] - xs[0]) and xs[3] > xs[0]  # b and c start while a runs
    for label in ("ok", "FAILED", "TIMED OUT #2", "CANCELLED", "running"):
        assert f">{label}</text>" in svg
    assert "not started" in svg  # e has no attempt
    patterns = re.findall(r'fill="url\(#(p-[a-z]+)\)"', svg)
    assert len(set(patterns)) >= 4  # statuses differ by pattern, not only by colour


def test_a_killed_run_is_reported_as_not_progressing(repo: Repo) -> None:
    repo.pipeline({"id": "first", "command": "echo ok"}, {"id": "hang", "command": "sleep 30"})
    proc = repo.spawn("start")
    try:
        cli_dir = repo.root / ".runs/default/cli"
        deadline = time.monotonic() + 20
        manifest: dict[str, Any] = {}
        while time.monotonic() < deadline:
            found = list(cli_dir.glob("*/manifest.json"))
            if found:
                try:
                    manifest = json.loads(found[0].read_text())
                except ValueError:
                    continue
                if manifest["commands"][1].get("pgid"):
                    break
            time.sleep(0.05)
        proc.kill()  # the orchestrator dies without a word
        proc.communicate(timeout=10)
    finally:
        pgid = manifest.get("commands", [{}, {}])[1].get("pgid")
        if isinstance(pgid, int) and pgid > 1:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)  # the stage group the test's run started
    code, _, stderr = report(repo, manifest["run_id"])
    assert code == 0, stderr
    html = (cli_dir / manifest["run_id"] / "report.html").read_text()
    assert "This run is not progressing" in html and "resume " + manifest["run_id"] in html
    assert 'data-stage="hang" data-attempt="1" data-status="interrupted"' in html
    assert ">running</span>" not in html


def test_attempts_from_a_retry_history_include_the_running_attempt() -> None:
    from codex_orchestrator.view.attempts import stage_attempts

    entry = {
        "index": 1,
        "id": "t",
        "status": "running",
        "attempts": 3,
        "started_at": "2026-01-01T00:00:05.000Z",
        "attempt_history": [
            {
                "attempt": 1,
                "exit_code": 1,
                "timed_out": False,
                "cancelled": False,
                "started_at": "2026-01-01T00:00:00.000Z",
                "completed_at": "2026-01-01T00:00:01.000Z",
            },
            {
                "attempt": 2,
                "exit_code": None,
                "timed_out": True,
                "cancelled": False,
                "started_at": "2026-01-01T00:00:02.000Z",
                "duration_seconds": 2.0,
            },
        ],
    }
    attempts = stage_attempts({"commands": [entry]}, now=1767225609.0)
    assert [(a.number, a.status) for a in attempts] == [
        (1, "failed"),
        (2, "timed out"),
        (3, "running"),
    ]
    assert attempts[1].end == attempts[1].start + 2.0 and attempts[2].end == 1767225609.0


def test_linked_log_folders_are_not_followed(repo: Repo, tmp_path: Path) -> None:
    repo.pipeline({"id": "talk", "command": "echo inside; exit 1"})
    run_id = json.loads(repo.cli("start", "--format", "json").stdout)["run_id"]
    run_dir = repo.root / ".runs/default/cli" / run_id
    for folder in ("commands", "errors"):
        outside = tmp_path / f"outside-{folder}"
        (run_dir / folder).rename(outside)
        for path in outside.iterdir():
            path.write_text('{"secret": "outside-the-run"}\n')
        (run_dir / folder).symlink_to(outside)
    code, _, stderr = report(repo, run_id)
    # the run lookup refuses a run whose record folders are links: nothing is read through them
    assert code == 2, stderr
    assert "commands is a link" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (run_dir / "report.html").exists()


def _stages(repo: Repo, count: int, command: str = "true", **stage: Any) -> tuple[str, Path]:
    """A finished run of ``count`` stages (each ``command``, plus ``stage`` keys); its id and
    directory."""
    repo.write_config(
        {
            "defaultPipeline": f"p{count}",
            "pipelines": [
                {
                    "id": f"p{count}",
                    "stages": [{"id": f"s{i}", "command": command, **stage} for i in range(count)],
                }
            ],
        }
    )
    result = repo.cli("start", "--format", "json", timeout=120)
    run_id = json.loads(result.stdout)["run_id"]
    return run_id, repo.root / ".runs/default/cli" / run_id


@pytest.mark.slow
def test_report_bound_holds_whatever_the_logs(repo: Repo) -> None:
    """Huge logs (1 GiB each, binary, one endless line of characters HTML must escape) give a
    page within the documented bound: each tail within its bytes, all tails within the page's
    text budget, the rest linked."""
    from codex_orchestrator.view.report import LOG_TAIL_BYTES, TEXT_BUDGET_BYTES

    stages = 40
    run_id, run_dir = _stages(repo, stages, "echo hello; exit 1", allowFailure=True)
    escaped_lines = b'"' * 100_000 + (b'"<&' * 60 + b"\n") * (LOG_TAIL_BYTES // 100)
    for index, path in enumerate(sorted((run_dir / "commands").iterdir())):
        with path.open("r+b") as log:
            log.truncate(1 << 30)  # sparse: a gigabyte of NUL bytes
            log.seek(0, os.SEEK_END)
            log.write(os.urandom(LOG_TAIL_BYTES) if index % 2 else escaped_lines)
    for path in (run_dir / "errors").iterdir():
        path.write_text(json.dumps({"reason": '"' * 30_000}))
    code, _, stderr = report(repo, run_id)
    assert code == 0, stderr
    page = (run_dir / "report.html").read_bytes()
    per_stage = 16 * 1024  # the table row, the timeline bar, headings and links of a stage
    assert len(page) <= TEXT_BUDGET_BYTES + stages * per_stage + 64 * 1024
    html = page.decode("utf-8")
    errors, logs = html.split("<h2>Logs")
    for section, kind in ((errors, "error"), (logs, "log")):
        assert f"MiB of {kind} text; open the file" in section  # the rest is linked
        assert "<pre>" in section  # but the budget is not all spent on the other section
    tails = re.findall(r"<pre>(.*?)</pre>", logs, re.S)
    assert max(len(tail.encode()) for tail in tails) <= 6 * LOG_TAIL_BYTES
    assert re.search(r"1073[0-9]{6} bytes; last [0-9]+ lines", logs)  # the size is said


@pytest.mark.slow
def test_report_linear_lists_each_folder_once(repo: Repo, monkeypatch: Any) -> None:
    """The work of a report and of a ``logs --follow`` poll grows with the stages, never with
    stages x files: each run folder is listed once, each log opened once."""
    from codex_orchestrator.commands.logs import LogView
    from codex_orchestrator.records.stage_logs import STREAMS
    from codex_orchestrator.records.workspace import Workspace
    from codex_orchestrator.view.report import render_run_report

    monkeypatch.setenv("CODEX_ORCHESTRATOR_ROOT", str(repo.root))
    calls = {"list": 0, "open": 0}
    real_scandir, real_listdir, real_open = os.scandir, os.listdir, os.open

    def counted(kind: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[kind] += 1
            return real(*args, **kwargs)

        return call

    def measure(action: Callable[[], object]) -> dict[str, int]:
        calls.update(list=0, open=0)
        action()
        return dict(calls)

    runs = {count: _stages(repo, count)[1] for count in (10, 100)}
    monkeypatch.setattr(os, "scandir", counted("list", real_scandir))
    monkeypatch.setattr(os, "listdir", counted("list", real_listdir))
    monkeypatch.setattr(os, "open", counted("open", real_open))
    work = {}
    for count, run_dir in runs.items():
        manifest = json.loads((run_dir / "manifest.json").read_text())
        view = LogView(Workspace.from_env(), run_dir, None, STREAMS)
        work["report", count] = measure(partial(render_run_report, run_dir))
        work["follow", count] = measure(partial(view.sources, manifest))
    assert work["report", 10]["list"] == work["report", 100]["list"] <= 2
    assert work["follow", 10]["list"] == work["follow", 100]["list"] == 1
    opens = work["report", 100]["open"] / work["report", 10]["open"]
    assert opens <= 11, work  # 10x the stages: at most about 10x the opens


def test_report_in_memory_writes_nothing(repo: Repo) -> None:
    from codex_orchestrator.view.report import render_run_report

    repo.write_config(
        {
            "defaultPipeline": "parent",
            "pipelines": [
                {"id": "parent", "stages": [{"id": "kid", "kind": "subpipeline", "pipeline": "c"}]},
                {"id": "c", "stages": [{"id": "echo", "command": f"echo '{HOSTILE}'"}]},
            ],
        }
    )
    run_id = json.loads(repo.cli("start", "--format", "json").stdout)["run_id"]
    runs = repo.root / ".runs/default/cli"
    before = sorted(str(path) for path in runs.rglob("*"))
    page = render_run_report(runs / run_id)
    assert isinstance(page, str) and page.startswith("<!DOCTYPE html>")
    assert f"Run {run_id}" in page and "report.html" in page  # the child's report is linked
    assert sorted(str(path) for path in runs.rglob("*")) == before
