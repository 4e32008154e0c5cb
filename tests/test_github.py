"""GitHub Actions output (view/github.py) checked against the documented workflow-command syntax
(``::name key=value,key=value::message``) and against a model of how the Actions runner reads a
step's output, with a stage trying to inject commands; the job summary table rendered by a
real CommonMark + GFM-tables renderer; the summary file appended safely."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from codex_orchestrator.util.terminal_text import prefixed_line
from codex_orchestrator.view.github import (
    SUMMARY_BYTES,
    CommandGate,
    append_step_summary,
    endgroup,
    error,
    escape_data,
    escape_property,
    group,
    step_summary_markdown,
    workflow_command,
)
from conftest import Repo
from helpers.actions_runner import COMMAND_LINE, INJECTIONS, runner_commands

# --- the syntax of what we print -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["plain", "100% done", "a:b,c", "line1\nline2", "cr\r\nlf", "%0A literal", "::error::x", ""],
)
def test_escaped_values_round_trip_through_the_runner(text: str) -> None:
    line = error(title=text or "t", message=text)
    assert COMMAND_LINE.fullmatch(line), line
    (command,) = runner_commands(line)
    assert command.name == "error"
    assert command.properties == {"title": (text or "t").replace("\r", "\u240d")}
    assert command.data == text.replace("\r", "\u240d")


def test_escaping_follows_the_documented_tables() -> None:
    assert escape_data("%\r\n:,") == "%25%0D%0A:,"
    assert escape_property("%\r\n:,") == "%25%0D%0A%3A%2C"
    assert group("build") == "::group::build"
    assert endgroup() == "::endgroup::"
    assert error("test", "3 failed, 10 passed") == "::error title=test::3 failed, 10 passed"
    assert workflow_command("notice", "m", title="a,b", file="c:d") == (
        "::notice title=a%2Cb,file=c%3Ad::m"
    )


def test_control_characters_in_a_summary_cannot_split_or_colour_the_line() -> None:
    line = error("lint", "bad\x1b[31m red\x07 \r::error::x\x00")
    assert "\r" not in line and "\n" not in line and "\x1b" not in line
    assert COMMAND_LINE.fullmatch(line)
    assert [command.name for command in runner_commands(line)] == ["error"]


def _stage_run(gate: CommandGate, stage: str, output: str, failed: bool) -> Iterator[str]:
    yield gate.command(group(stage))
    for line in output.splitlines(keepends=True):
        yield gate.stage_output(stage, line)
    yield gate.command(endgroup())
    if failed:
        yield gate.command(error(stage, "exit 1"))


def test_no_line_a_stage_prints_becomes_a_command(tmp_path: Path) -> None:
    """Two stages print every injection (as one real stage run writes them, bytes from a
    process); the runner model acts on our commands only, in order."""
    script = tmp_path / "evil.py"
    script.write_text(
        "import sys\n"
        f"for line in {INJECTIONS!r}:\n"
        "    sys.stdout.write(line + '\\n')\n"
        "sys.stdout.write('no newline at the end ::error::x')\n"
    )
    printed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, check=True
    ).stdout.decode()
    gate = CommandGate()
    output = "".join(
        [
            *_stage_run(gate, "lint", printed, failed=True),
            *_stage_run(gate, "test", printed, failed=False),
            gate.close(),
        ]
    )

    acted = [(command.name, command.data) for command in runner_commands(output)]
    names = [name for name, _ in acted]
    assert [name for name in names if len(name) != 32] == [
        "group",
        "stop-commands",
        "endgroup",
        "error",
        "group",
        "stop-commands",
        "endgroup",
    ]
    assert ("group", "lint") in acted and ("error", "exit 1") in acted
    tokens = [data for name, data in acted if name == "stop-commands"]
    assert len(set(tokens)) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", t) for t in tokens)
    assert [name for name in names if len(name) == 32] == tokens  # each stop is resumed

    for line in output.split("\n")[:-1]:
        assert "\r" not in line
        if line.startswith("::"):
            assert COMMAND_LINE.fullmatch(line), line
        else:
            assert re.match(r"\[(lint|test)\] ", line), line
    # The prefix alone defeats every "::" injection; only the legacy "##[" form, which the
    # runner finds anywhere in a line, gets through it: hence the stop around stage output.
    prefixed = "".join(prefixed_line("lint", line) + "\n" for line in printed.split("\n"))
    leaked = runner_commands(prefixed)
    assert [(command.name, command.data) for command in leaked] == [
        ("error", "legacy form anywhere"),
        ("set-output", "pwned"),
    ]


def test_a_stage_cannot_resume_commands_with_a_token_of_its_own() -> None:
    gate = CommandGate(token_factory=lambda: "0" * 32)
    output = gate.stage_output("s", "::" + "1" * 32 + "::\n::error::pwned\n") + gate.close()
    assert [command.name for command in runner_commands(output)] == ["stop-commands", "0" * 32]


def test_output_without_lines_prints_nothing_and_close_is_idempotent() -> None:
    gate = CommandGate()
    assert gate.stage_output("s", "") == ""
    assert gate.close() == ""
    assert gate.stage_output("s", "x").startswith("::stop-commands::")
    assert gate.close().startswith("::") and gate.close() == ""


# --- the job summary ---------------------------------------------------------------------


def _render(markdown: str) -> str:
    """HTML as a CommonMark renderer with GFM tables (as GitHub's) makes it."""
    return MarkdownIt("commonmark").enable("table").render(markdown)


def _cells(html: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row, re.S) for row in rows]


def test_step_summary_of_a_real_run_escapes_every_stage_derived_cell(repo: Repo) -> None:
    repo.pipeline(
        {"id": "ok", "command": "echo '42 passed'"},
        {"id": "pipes", "command": "echo 'a | b | c'"},
        {"id": "ticks", "command": "echo '`code` **bold** [x](javascript:alert(1))'"},
        {"id": "html", "command": "echo '<script>alert(1)</script> &amp; <b>b</b>'"},
        {"id": "bad", "command": "echo 'two\nlines'; exit 3", "allowFailure": True},
        {"id": "boom", "command": "printf 'x\\033[31m| red |\\n'; exit 1"},
        {"id": "never", "command": "true"},
    )
    code, document = repo.start_json()
    assert code == 1
    manifest = repo.manifest(document)
    markdown = step_summary_markdown(manifest)
    html = _render(markdown)

    assert "<script>" not in html and "<b>" not in html and "<code>" not in html
    assert "<strong>" not in html and "<a " not in html
    rows = _cells(html)
    assert rows[0] == ["status", "stage", "duration", "summary"]
    assert all(len(row) == 4 for row in rows), rows
    by_stage = {row[1]: row for row in rows[1:]}
    assert list(by_stage) == ["ok", "pipes", "ticks", "html", "bad", "boom", "never"]
    assert by_stage["ok"][0] == "✓ succeeded" and by_stage["ok"][3] == "42 passed"
    assert by_stage["pipes"][3] == "a | b | c"
    assert by_stage["ticks"][3] == "`code` **bold** [x](javascript:alert(1))"
    assert (
        by_stage["html"][3]
        == "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp; &lt;b&gt;b&lt;/b&gt;"
    )
    assert by_stage["bad"][0] == "↷ skipped"
    assert by_stage["boom"][0] == "✗ failed" and by_stage["boom"][3] == "x\ufffd[31m| red |"
    assert by_stage["never"][0] == "· pending" and by_stage["never"][2] == ""
    assert re.fullmatch(r"\d+\.\ds", by_stage["ok"][2])
    assert "Pipeline main failed at stage boom" in html  # the run summary, below the table
    assert "<br>" in html.split("</table>")[1]  # its lines kept apart


def _manifest(summary: str, count: int = 1) -> dict[str, Any]:
    commands = [
        {"index": i, "id": f"s{i}", "status": "failed", "summary": summary} for i in range(count)
    ]
    return {"run_id": "r", "pipeline_id": "p", "status": "failed", "commands": commands}


def test_a_multi_line_summary_stays_in_its_cell() -> None:
    rows = _cells(_render(step_summary_markdown(_manifest("one\ntwo | three\n\n| --- |"))))
    assert rows[1] == ["✗ failed", "s0", "", "one<br>two | three<br><br>| --- |"]


@pytest.mark.slow
def test_long_cells_and_huge_tables_are_bounded() -> None:
    markdown = step_summary_markdown(_manifest("x" * 10_000 + "|" * 10_000, count=5000))
    assert len(markdown.encode()) <= SUMMARY_BYTES + 1024
    rows = _cells(_render(markdown))
    assert all(len(row) == 4 for row in rows)
    assert rows[1][3] == "x" * 299 + "…"
    assert rows[-1][1].endswith("more stages")


# --- appending to $GITHUB_STEP_SUMMARY -------------------------------------------------------


def test_append_adds_to_a_regular_file_and_follows_the_runners_link(tmp_path: Path) -> None:
    target = tmp_path / "step_summary"
    target.write_text("before\n")
    append_step_summary(target, "one\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    append_step_summary(link, "two ✓\n")
    assert target.read_text() == "before\none\ntwo ✓\n"
    fresh = tmp_path / "fresh"
    append_step_summary(fresh, "new\n")
    assert fresh.read_text() == "new\n"


def test_a_fifo_without_a_reader_fails_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def append() -> None:
        try:
            append_step_summary(fifo, "x\n")
            outcome.append(None)
        except OSError as caught:
            outcome.append(caught)

    thread = threading.Thread(target=append, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # a blocking open: let the thread go before failing
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        pytest.fail("append_step_summary blocked on a FIFO without a reader")
    assert isinstance(outcome[0], OSError)


def test_a_fifo_with_a_reader_is_refused_without_writing(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(OSError, match="not a regular file"):
            append_step_summary(fifo, "x\n")
        assert os.read(reader, 10) == b""  # nothing was written
    finally:
        os.close(reader)


@pytest.mark.parametrize("path", ["/dev/null", "dir"])
def test_devices_and_directories_are_refused(tmp_path: Path, path: str) -> None:
    target = Path(path) if path.startswith("/") else tmp_path
    before = target.stat()
    with pytest.raises(OSError):
        append_step_summary(target, "x\n")
    assert stat.S_IFMT(target.stat().st_mode) == stat.S_IFMT(before.st_mode)
