"""One neutraliser for every terminal-bound text: no escape sequence, C1 control or bidi/format
character a stage prints reaches a real terminal, whichever way the tool shows it (the graph
echo under ``CI`` or ``TERM=dumb``, the sequential echo, the live view, and the lines of
``start``, ``status`` and ``runs``)."""

from __future__ import annotations

import json

import pytest

from conftest import Repo
from helpers.terminal import run_in_pty, view_env

# A window title (OSC 0), the clipboard (OSC 52), a clear screen (CSI 2J), a bell, 8-bit CSI and
# OSC (U+009B, U+009D as UTF-8), a right-to-left override (U+202E) and a right-to-left mark
# (U+200F); the last line, the stage's summary, carries the C1 and bidi ones.
INJECT = (
    "printf '\\033]0;PWNED-TITLE\\007\\033]52;c;cHduZWQ=\\007\\033[2J\\007plain-a\\n';"
    "printf 'b\\302\\23331m\\302\\2350;C1-TITLE\\302\\234 \\342\\200\\256gnp.exe \\342\\200\\217end\\n'"
)
FORBIDDEN = (
    b"\x1b]",  # any OSC: title, clipboard, hyperlink
    b"\x1b[2J",
    b"\x07",
    b"\xc2\x9b",
    b"\xc2\x9d",
    b"\xc2\x9c",
    "\u202e".encode(),
    "\u200f".encode(),
)


def _assert_clean(data: bytes, where: str) -> None:
    for forbidden in FORBIDDEN:
        assert forbidden not in data, (where, forbidden, data[-2000:])


def _graph(repo: Repo) -> None:
    repo.pipeline(
        {"id": "setup", "command": "echo ready"},
        {"id": "noisy", "command": INJECT, "needs": ["setup"]},
        {"id": "quiet", "command": "echo calm", "needs": ["setup"]},
    )


@pytest.mark.parametrize(
    "extra",
    [{"CI": "1"}, {"TERM": "dumb"}, {}],
    ids=["ci-graph-echo", "dumb-graph-echo", "live-view"],
)
@pytest.mark.slow
def test_no_stage_escape_reaches_the_terminal_on_any_surface(
    repo: Repo, extra: dict[str, str]
) -> None:
    _graph(repo)
    env = view_env(repo.env, **extra)
    code, screen, stdout = run_in_pty(["start"], repo.root, env)
    assert code == 0, screen
    _assert_clean(screen, "start (terminal)")
    _assert_clean(stdout.encode(), "start (stdout)")
    if extra:  # the echo still shows the stage's text, just not its controls
        assert b"plain-a" in screen and b"gnp.exe" in screen, screen
    log = next((repo.root / ".runs/default/cli").glob("*/commands/*-noisy.stdout.log"))
    assert b"\x1b]52;" in log.read_bytes()  # the log keeps the stage's bytes as they were

    run_id = json.loads(repo.cli("runs", "--format", "json").stdout)["runs"][0]["run_id"]
    for args in (["status", run_id], ["runs"], ["status", run_id, "--watch"]):
        code, screen, stdout = run_in_pty(args, repo.root, env)
        assert code == 0, (args, screen)
        _assert_clean(screen + stdout.encode(), " ".join(args))
        assert "gnp.exe" in stdout or args[0] == "runs", stdout


def test_sequential_echo_under_ci_is_neutralised_too(repo: Repo) -> None:
    repo.pipeline({"id": "noisy", "command": INJECT}, {"id": "after", "command": "echo done"})
    code, screen, stdout = run_in_pty(["start"], repo.root, view_env(repo.env, CI="1"))
    assert code == 0 and b"plain-a" in screen
    _assert_clean(screen + stdout.encode(), "sequential echo")


@pytest.mark.slow
def test_json_output_escapes_what_a_terminal_could_act_on(repo: Repo) -> None:
    """JSON keeps the stage's text exactly, as escapes a terminal only prints."""
    repo.pipeline({"id": "noisy", "command": INJECT})
    repo.cli("start")
    run_id = json.loads(repo.cli("runs", "--format", "json").stdout)["runs"][0]["run_id"]
    for args in (["status", run_id, "--format", "json"], ["runs", "--format", "ndjson"]):
        code, screen, stdout = run_in_pty(args, repo.root, view_env(repo.env))
        assert code == 0
        _assert_clean(screen + stdout.encode(), " ".join(args))
    document = json.loads(repo.cli("status", run_id, "--format", "json").stdout)
    summary = document["commands"][0]["summary"]
    assert "\u202egnp.exe" in summary and "\x9b" in summary  # the data itself is unchanged
