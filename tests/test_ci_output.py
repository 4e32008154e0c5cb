"""What a run prints where no live view is drawn (a pipe, a CI log), driven through the real
CLI: each stage's output streamed as it is written with a ``[stage]`` prefix (whole lines,
escapes neutralised), ``--quiet`` and the ``quiet`` setting keeping the summary only; under
GitHub Actions, folded groups, ``::error`` annotations, the job summary, and no line a stage
prints acting as a workflow command; after a failure, the last lines of each failed stage and
the exact ``logs`` command."""

from __future__ import annotations

import os
import re
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Repo
from helpers.actions_runner import COMMAND_LINE, INJECTIONS, runner_commands

pytestmark = pytest.mark.slow

RUN_ID = re.compile(r"run (\S+) started")


def _read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 30) -> str:
    """Read ``proc``'s stderr (unbuffered) until it holds ``needle``; what was read."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while needle.encode() not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{needle!r} never appeared: {seen!r}"
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"stderr closed before {needle!r}: {seen!r}"
            seen += chunk
    return seen.decode()


def test_stage_output_reaches_a_pipe_while_the_stage_runs(repo: Repo, tmp_path: Path) -> None:
    """The stage waits, after its first line, for a file that the test creates only once it
    has read that line from the pipe: the run can only finish if the line came live."""
    gate = tmp_path / "go"
    repo.pipeline(
        {
            "id": "slow",
            "command": (
                f"echo first; printf '\\033]0;title\\007tail\\n'; "
                f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; echo second"
            ),
        }
    )
    proc = repo.spawn("start")
    try:
        seen = _read_until(proc, "[slow] tail")
        assert "[slow] first\n" in seen and "\x1b" not in seen and "\x07" not in seen
        gate.touch()
        stdout, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "[slow] second\n" in rest
    assert "succeeded" in stdout.splitlines()[0]


def test_quiet_flag_and_setting_keep_only_the_summary(repo: Repo) -> None:
    repo.pipeline({"id": "talk", "command": "echo chatter"})
    loud = repo.cli("start")
    assert "[talk] chatter" in loud.stderr
    quiet = repo.cli("start", "--quiet")
    assert quiet.returncode == 0 and "chatter" not in quiet.stderr
    assert "talk" in quiet.stdout  # the summary table still names the stage
    repo.pipeline({"id": "talk", "command": "echo chatter"}, settings={"quiet": True})
    assert "chatter" not in repo.cli("start").stderr
    resumed_quiet = repo.cli("start", "--format", "json")
    assert "chatter" not in resumed_quiet.stderr  # stderr of JSON output carries notes only


def test_stages_running_at_once_interleave_by_whole_lines(repo: Repo) -> None:
    half_lines = "for i in 1 2 3; do printf '{0}-'; sleep 0.1; printf '{0}\\n'; done"
    stages = [
        {"id": "a", "command": half_lines.format("a")},
        {"id": "b", "command": half_lines.format("b")},
        {"id": "join", "command": "echo joined", "needs": ["a", "b"]},
    ]
    repo.write_config(
        {"defaultPipeline": "g", "pipelines": [{"id": "g", "maxParallel": 2, "stages": stages}]}
    )
    result = repo.cli("start")
    assert result.returncode == 0, result.stderr
    echoed = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert sorted(echoed) == ["[a] a-a"] * 3 + ["[b] b-b"] * 3 + ["[join] joined"]


def test_a_failed_run_ends_with_each_failed_stages_last_lines(repo: Repo) -> None:
    repo.pipeline(
        {"id": "ok", "command": "echo fine"},
        {
            "id": "unit",
            "command": (
                "for i in $(seq 1 30); do echo out-$i; done; "
                "printf 'err \\033[2Jcleared\\n' >&2; exit 1"
            ),
        },
    )
    result = repo.cli("start")
    assert result.returncode == 1
    run_id = RUN_ID.search(result.stderr).group(1)  # type: ignore[union-attr]
    after_table = result.stdout.split("  2. unit", 1)[1]
    shown = re.findall(r"^out-(\d+)$", after_table, re.M)
    assert shown == [str(n) for n in range(11, 31)]  # the last 20 lines, in order
    assert "err cleared" in after_table and "\x1b" not in result.stdout
    command = f"codex-orchestrator logs {run_id} unit"
    assert command in after_table
    assert "ok failed" not in after_table  # only failed stages get a tail
    logs = repo.cli(*shlex.split(command)[1:])  # the printed command works as printed
    assert logs.returncode == 0 and "out-1\n" in logs.stdout and "out-30\n" in logs.stdout

    as_json = repo.cli("start", "--format", "json")
    assert as_json.stdout.lstrip().startswith("{")  # stdout stays one document
    assert "out-30" in as_json.stderr and "codex-orchestrator logs " in as_json.stderr


def test_github_actions_output_is_folded_annotated_and_inert(repo: Repo, tmp_path: Path) -> None:
    """A stage prints every injection; the runner model acts on our commands only: a group
    per stage, one error annotation for the failed stage, stop/resume pairs; every command
    line is of the documented syntax; the job summary gets the stages table."""
    evil = tmp_path / "evil.py"
    evil.write_text(
        "import sys\n"
        f"for line in {INJECTIONS!r}:\n"
        "    sys.stdout.write(line + '\\n')\n"
        "sys.stdout.write('no newline at the end ::error::x')\n"
    )
    hostile = f"{shlex.quote(sys.executable)} {shlex.quote(str(evil))}"
    repo.pipeline(
        {"id": "evil", "command": hostile},
        {"id": "broken", "command": f"{hostile}; exit 2", "needs": ["evil"]},
        {"id": "beside", "command": "echo '::add-mask::x'", "needs": ["evil"]},
    )
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    env = {"GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    result = repo.cli("start", env=env)
    assert result.returncode == 1

    for line in re.split(r"\r\n|\r|\n", result.stderr):  # stage lines are all prefixed
        if line.lstrip().startswith("::"):
            assert COMMAND_LINE.fullmatch(line), line
    stdout_lines = result.stdout.splitlines()  # the table and the tails, commands stopped
    assert COMMAND_LINE.fullmatch(stdout_lines[0]) and COMMAND_LINE.fullmatch(stdout_lines[-1])
    acted = [(c.name, c.data, c.properties) for c in runner_commands(result.stderr)]
    ours = [(name, data) for name, data, _ in acted if len(name) != 32]
    assert {data for name, data in ours if name == "group"} == {"evil", "broken", "beside"}
    assert sum(name == "group" for name, _ in ours) == sum(name == "endgroup" for name, _ in ours)
    assert {name for name, _ in ours} == {"group", "endgroup", "stop-commands", "error"}
    errors = [(data, props) for name, data, props in acted if name == "error"]
    assert errors == [("no newline at the end ::error::x", {"title": "broken"})]
    assert [c.name for c in runner_commands(result.stdout) if len(c.name) != 32] == [
        "stop-commands"
    ]
    assert "[evil] ::add-mask::pwned" in result.stderr  # shown, prefixed, but inert

    written = summary.read_text()
    assert written.startswith("earlier step\n")
    assert "| ✗ failed | broken |" in written and "| ✓ succeeded | evil |" in written


def test_detached_run_prints_nothing_to_the_terminal_after_the_parent_exits(
    repo: Repo,
) -> None:
    """``start --detach`` on a real terminal (stdin, stdout and stderr): once the command has
    returned, the terminal receives nothing more, though the run fails and writes to
    stderr, to stdout and (tries) to /dev/tty."""
    repo.pipeline(
        {
            "id": "noisy",
            "command": "echo out; echo err >&2; (echo tty > /dev/tty) 2>/dev/null; exit 1",
        }
    )
    controller, follower = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codex_orchestrator", "start", "--detach"],
            cwd=repo.root,
            env=repo.env,
            stdin=follower,
            stdout=follower,
            stderr=follower,
            start_new_session=True,
        )
        assert proc.wait(timeout=60) == 0
        os.close(follower)
        follower = -1
        printed = _drain(controller, 0.2)
        run_id = RUN_ID.search(printed.decode()).group(1)  # type: ignore[union-attr]
        watched = repo.cli("status", run_id, "--watch", "--interval", "0.1")
        assert watched.returncode == 1  # the run has ended, failed
        assert _drain(controller, 0.3) == b""
    finally:
        os.close(controller)
        if follower >= 0:
            os.close(follower)


def _drain(fd: int, quiet_for: float) -> bytes:
    """Everything readable from ``fd`` until it stays quiet for ``quiet_for`` seconds."""
    data = b""
    while select.select([fd], [], [], quiet_for)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # no writer left
            break
        if not chunk:
            break
        data += chunk
    return data
