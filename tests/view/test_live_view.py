"""The live view, seen through a real pseudo-terminal (and a real tmux screen)."""

from __future__ import annotations

import json
import os
import pty
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Repo
from helpers.terminal import colour_codes, plain, run_in_pty, start_in_pty, view_env

NOISY = (
    "printf '\\033[2J\\033[H\\033]0;evil-title\\007\\033]8;;http://x\\033\\\\link\\n';"
    "printf 'bell\\a\\033[31mred\\033[0m\\n'; sleep 0.4; echo noisy-done"
)


def _pipeline(repo: Repo) -> None:
    repo.pipeline(
        {"id": "build", "command": "echo compiling; sleep 0.5; echo built-ok"},
        {"id": "noisy", "command": NOISY},
        {"id": "lint", "command": "echo lint-bad; exit 3", "allowFailure": True},
        {"id": "test", "command": "echo tests-passed"},
    )


@pytest.mark.slow
def test_view_shows_stage_ids_and_marks_in_colour(repo: Repo) -> None:
    _pipeline(repo)
    code, screen, stdout = run_in_pty(["start"], repo.root, view_env(repo.env))
    assert code == 0, screen
    text = screen.decode()
    for stage in ("build", "noisy", "lint", "test"):
        assert stage in text
    assert "✓" in text and "↷" in text  # succeeded and skipped marks
    assert "pipeline main" in text and "succeeded" in text
    assert colour_codes(screen), "the view should colour its marks on a colour terminal"
    assert "run " in stdout and "succeeded" in stdout  # the result still goes to stdout


@pytest.mark.slow
def test_no_color_means_no_colour_codes(repo: Repo) -> None:
    _pipeline(repo)
    code, screen, _ = run_in_pty(["start"], repo.root, view_env(repo.env, NO_COLOR="1"))
    assert code == 0
    assert "✓" in screen.decode()
    assert colour_codes(screen) == []


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{"TERM": "dumb"}, {"CI": "true"}], ids=["TERM=dumb", "CI"])
def test_view_is_off_on_dumb_terminals_and_in_ci(repo: Repo, extra: dict[str, str]) -> None:
    _pipeline(repo)
    code, screen, _ = run_in_pty(["start"], repo.root, view_env(repo.env, **extra))
    assert code == 0
    assert b"\x1b" not in screen and b"\x07" not in screen
    assert b"noisy-done" in screen  # plain echo of stage output, neutralised
    assert "␇".encode() in screen  # the bell is shown, not rung


@pytest.mark.slow
def test_piped_output_has_no_escape_codes_at_all(repo: Repo) -> None:
    _pipeline(repo)
    result = repo.cli("start", env=view_env(repo.env))
    assert result.returncode == 0
    assert "\x1b" not in result.stderr and "\x1b" not in result.stdout
    assert "build" in result.stdout and "lint" in result.stdout


@pytest.mark.slow
def test_json_output_on_a_terminal_has_no_view(repo: Repo) -> None:
    _pipeline(repo)
    code, screen, stdout = run_in_pty(["start", "--format", "json"], repo.root, view_env(repo.env))
    assert code == 0
    assert b"\x1b" not in screen
    assert json.loads(stdout)["status"] == "succeeded"


@pytest.mark.slow
def test_stage_escape_sequences_never_reach_the_terminal(repo: Repo) -> None:
    _pipeline(repo)
    code, screen, _ = run_in_pty(["start"], repo.root, view_env(repo.env))
    assert code == 0
    for forbidden in (b"\x1b[2J", b"\x1b[H", b"\x1b]0;", b"\x1b]8;", b"\x07", b"evil-title\x07"):
        assert forbidden not in screen, forbidden
    log = next((repo.root / ".runs/default/cli").glob("*/commands/02-noisy.stdout.log"))
    assert b"\x1b[2J" in log.read_bytes()  # the log keeps the stage's bytes unchanged


@pytest.mark.slow
def test_parallel_stage_view_from_status_watch(repo: Repo) -> None:
    repo.pipeline(
        {"id": "first", "command": "echo one"},
        {"id": "slow", "command": "echo still-going; sleep 1.5; echo slow-finished"},
    )
    proc = repo.spawn("start", "--format", "json")
    try:
        cli_dir = repo.root / ".runs/default/cli"
        deadline = time.monotonic() + 20
        while not list(cli_dir.glob("*/manifest.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        [run_dir] = list(cli_dir.iterdir())
        code, screen, stdout = run_in_pty(
            ["status", run_dir.name, "--watch", "--interval", "0.2"], repo.root, view_env(repo.env)
        )
    finally:
        proc.communicate(timeout=30)
    assert code == 0, screen
    text = screen.decode()
    assert "first" in text and "slow" in text and "✓" in text
    assert "succeeded" in stdout


class Tmux:
    """A private tmux server (own socket) running one CLI command; killed by `close`."""

    def __init__(self, repo: Repo, args: str, done: Path, columns: int, rows: int) -> None:
        self.tmux = ["tmux", "-L", f"codex-view-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
        env = view_env(repo.env)
        exports = " ".join(
            f"{key}={shlex.quote(env[key])}"
            for key in ("PYTHONPATH", "CODEX_ORCHESTRATOR_ROOT", "TERM")
        )
        command = (
            f"cd {shlex.quote(str(repo.root))} && env {exports} {shlex.quote(sys.executable)} "
            f"-m codex_orchestrator {args} >/dev/null; touch {shlex.quote(str(done))}; sleep 60"
        )
        self.done = done
        new = [*self.tmux, "new-session", "-d", "-x", str(columns), "-y", str(rows), command]
        # the tmux server and its pane inherit this environment: a person's terminal, not CI's
        subprocess.run(new, check=True, env=env)

    def query(self, *args: str) -> str:
        """The output of a tmux command against this server."""
        return subprocess.run(
            [*self.tmux, *args], capture_output=True, text=True, check=True
        ).stdout

    def screen(self) -> str:
        """The text on the pane now."""
        return self.query("capture-pane", "-p")

    def resize(self, columns: int, rows: int) -> None:
        """Make the window (and its terminal) this size, as a person dragging its border."""
        self.query("resize-window", "-x", str(columns), "-y", str(rows))

    def wait(self, ready: Callable[[str], bool], timeout: float = 60) -> str:
        """The first screen for which ``ready`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if ready(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"the screen never got ready:\n{self.screen()}")

    def close(self) -> None:
        """End this tmux server (and the command it runs)."""
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def tmux(repo: Repo, tmp_path: Path) -> Iterator[Callable[..., Tmux]]:
    """Open CLI commands in private tmux servers, all closed at the end of the test."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    opened: list[Tmux] = []

    def open_tmux(args: str, columns: int = 90, rows: int = 24) -> Tmux:
        opened.append(Tmux(repo, args, tmp_path / f"done-{len(opened)}", columns, rows))
        return opened[-1]

    try:
        yield open_tmux
    finally:
        for session in opened:
            session.close()


@pytest.mark.slow
def test_clear_screen_from_a_stage_does_not_garble_the_screen(
    repo: Repo, tmux: Callable[..., Tmux]
) -> None:
    _pipeline(repo)
    session = tmux("start")
    screen = session.wait(lambda _: session.done.exists())
    title = session.query("display-message", "-p", "#{pane_title}")
    lines = [line for line in screen.splitlines() if line.strip()]
    assert lines[0].startswith("run ") and "started" in lines[0], screen  # nothing was cleared
    table = [line for line in lines if line[:1] in "✓✗↷"]
    assert [line.split()[1] for line in table] == ["build", "noisy", "lint", "test"], screen
    assert "evil-title" not in title and "evil-title" not in screen


@pytest.mark.slow
def test_small_terminal_keeps_running_stage_and_counts_the_rest(
    repo: Repo, tmux: Callable[..., Tmux]
) -> None:
    stages = [{"id": f"step-{n:02d}", "command": "true"} for n in range(1, 11)]
    stages[6] = {"id": "step-07", "command": "echo " + "w" * 80 + "; sleep 2"}
    repo.pipeline(*stages)
    session = tmux("start", columns=40, rows=7)
    during = session.wait(lambda screen: "more stages" in screen and "step-07" in screen)
    assert all(len(line) <= 40 for line in during.splitlines())
    assert "▶ step-07" in during and "…" in during  # the long last line is cut, not wrapped
    final = session.wait(lambda _: session.done.exists())
    assert "✓ step-10" in final and "more stages" not in final


@pytest.mark.slow
def test_shrinking_the_terminal_mid_run_leaves_no_stale_frame(
    repo: Repo, tmux: Callable[..., Tmux]
) -> None:
    """A narrower terminal re-wraps the wide frame on screen; the next frame erases all of it,
    not one row per line, so no part of the old frame stays above the new one."""
    long = "x" * 90
    repo.pipeline(
        {"id": "alpha", "command": f"echo {long}"},
        {"id": "beta", "command": f"echo {long}; echo started > beta.up; sleep 2; echo end"},
        {"id": "gamma", "command": "echo ok"},
    )
    session = tmux("start", columns=100, rows=20)
    session.wait(lambda screen: (repo.root / "beta.up").exists() and "▶ beta" in screen)
    session.resize(50, 20)
    final = session.wait(lambda _: session.done.exists())
    lines = [line for line in final.splitlines() if line.strip()]
    assert all(len(line) <= 50 for line in lines), final
    for stage_id in ("alpha", "beta", "gamma"):
        assert sum(stage_id in line for line in lines) == 1, final
    assert sum(line.startswith("run ") and "pipeline" in line for line in lines) <= 2, final


def test_interrupted_run_ends_with_the_final_table(repo: Repo) -> None:
    repo.pipeline(
        {"id": "quick", "command": "echo quick-done"},
        {"id": "long", "command": "echo waiting-forever; sleep 30"},
        {"id": "never", "command": "echo never-runs"},
    )
    session = start_in_pty(["start"], repo.root, view_env(repo.env))
    try:
        session.wait_for(b"waiting-forever")
        os.kill(session.proc.pid, signal.SIGINT)
        code, screen = session.finish()
    finally:
        session.close()
    assert code == 130
    tail = plain(screen).rsplit("pipeline main", 1)[1]  # the last frame drawn
    assert "cancelled (signal:SIGINT)" in tail
    assert "✗ long" in tail and "· never" in tail and "✓ quick" in tail


@pytest.mark.slow
def test_resume_shows_the_view_too(repo: Repo) -> None:
    marker = repo.root / "ok"
    repo.pipeline({"id": "flaky", "command": f"test -e {marker} && echo now-fine"})
    run_id = json.loads(repo.cli("start", "--format", "json").stdout)["run_id"]
    marker.write_text("")
    code, screen, _ = run_in_pty(["resume", run_id], repo.root, view_env(repo.env))
    assert code == 0, screen
    assert "✓ flaky" in plain(screen) and "attempt 2: now-fine" in plain(screen)


def test_a_terminal_without_a_size_still_gets_the_view(repo: Repo) -> None:
    repo.pipeline({"id": "sized", "command": "echo hello"})
    controller, terminal = pty.openpty()  # no TIOCSWINSZ: the terminal reports 0x0
    proc = subprocess.Popen(
        [sys.executable, "-m", "codex_orchestrator", "start"],
        cwd=repo.root,
        env=view_env(repo.env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    try:
        while chunk := _read_or_eof(controller):
            seen += chunk
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    assert "✓ sized" in plain(seen)


def _read_or_eof(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO once every writer of the terminal is gone
        return b""
