"""Shell completion scripts (completion.py) in real shells: bash with COMP_WORDS and the
completion function, and bash and zsh typing TAB in a real terminal (tmux); zsh and fish
syntax-checked, fish through its own ``complete -C``; run, pipeline and task ids listed from a
real repository with real runs."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

from codex_orchestrator.cli import COMMANDS, build_parser
from codex_orchestrator.completion import MAX_CANDIDATES, SHELLS, candidates, script
from codex_orchestrator.records.workspace import Workspace
from conftest import Repo, assert_usage_error, run_python

PROG = "codex-orchestrator"
SUBCOMMANDS = list(COMMANDS)
#: The real command on the shells' PATH (this checkout's package, whatever is installed).
LAUNCHER = """#!/bin/sh
exec {python} -m codex_orchestrator "$@"
"""


@cache
def _script(shell: str) -> str:
    return script(shell, build_parser())


class Shells:
    """The generated scripts, and the environment a shell completing in ``repo`` needs."""

    def __init__(self, repo: Repo, base: Path) -> None:
        self.repo = repo
        self.paths = {shell: base / f"completion.{shell}" for shell in SHELLS}
        for shell, path in self.paths.items():
            path.write_text(_script(shell), encoding="utf-8")
        bin_dir = base / "bin"
        bin_dir.mkdir()
        launcher = bin_dir / PROG
        launcher.write_text(LAUNCHER.format(python=shlex.quote(sys.executable)))
        launcher.chmod(0o755)
        home = base / "home"
        home.mkdir()
        self.env = {
            **repo.env,
            "PATH": f"{bin_dir}{os.pathsep}{repo.env['PATH']}",
            "HOME": str(home),
            "TERM": "xterm",
        }
        self.env.pop("CI", None)

    def bash(self, *words: str) -> list[str]:
        """COMPREPLY for the command line ``words`` (the last one is at the cursor), as bash
        splits it: ``--option=value`` arrives as ``--option``, ``=``, ``value``."""
        split: list[str] = []
        for word in words:
            if word.startswith("-") and "=" in word:
                option, _, value = word.partition("=")
                split += [option, "=", value] if value else [option, "="]
            else:
                split.append(word)
        code = (
            'source "$0"; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); '
            'COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; _codex_orchestrator; '
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        output = self.run(
            "bash", "--norc", "--noprofile", "-c", code, self.paths["bash"], PROG, *split
        )
        return [line for line in output.split("\n") if line]

    def zsh_core(self, *words: str) -> tuple[str, list[str]]:
        """What the zsh script's shared core computes: the kind and the candidates."""
        code = (
            'source "$0"; _codex_orchestrator_candidates "$1" "${@[-1]}" "${(@)@[2,-2]}"; '
            'print -r -- "$_co_kind"; print -r -- ${=_co_words}'
        )
        output = self.run("zsh", "-f", "-c", code, self.paths["zsh"], PROG, *words)
        kind, found, _ = output.split("\n", 2)
        return kind, sorted(found.split())

    def fish(self, line: str) -> list[str]:
        """What fish offers for ``line`` (``complete -C``), without descriptions."""
        output = self.run(
            "fish", "--no-config", "-c", f"source {self.paths['fish']}; complete -C $argv[1]", line
        )
        return sorted(entry.split("\t")[0] for entry in output.split("\n") if entry)

    def run(self, *argv: str | Path) -> str:
        """Run a shell in the repository; its stdout (it must succeed, printing no error)."""
        result = subprocess.run(
            [str(arg) for arg in argv],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            cwd=self.repo.root,
        )
        assert result.stderr == ""
        return result.stdout


def _shells(repo: Repo, base: Path) -> Shells:
    repo.write_config(
        {
            "pipelines": [
                {"id": "alpha", "stages": [{"id": "a", "command": "true"}]},
                {"id": "beta", "stages": [{"id": "b", "command": "true"}]},
            ]
        }
    )
    return Shells(repo, base)


@pytest.fixture
def shells(repo: Repo, tmp_path: Path) -> Shells:
    """Shells completing in a fresh repository (tests that make runs)."""
    return _shells(repo, tmp_path)


@pytest.fixture(scope="module")
def static(tmp_path_factory: pytest.TempPathFactory) -> Shells:
    """Shells completing in one repository without runs, shared by the static cases."""
    root = tmp_path_factory.mktemp("repo")
    return _shells(Repo(root), tmp_path_factory.mktemp("shells"))


def _runs(repo: Repo) -> list[str]:
    """Two real runs, in two tasks; their ids, newest first."""
    first = repo.start_json("alpha", "--task", "task-one")[1]["run_id"]
    second = repo.start_json("beta", "--task", "task-two")[1]["run_id"]
    return [second, first]


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian: apt-get install {tool})")


# Command line -> what completes there (static: no Python is started).
STATIC = [
    (("",), SUBCOMMANDS),
    (("st",), [name for name in COMMANDS if name.startswith("st")]),
    (("start", "--f"), ["--format"]),
    (("start", "--format", ""), ["text", "json"]),
    (("start", "--format="), ["text", "json"]),
    (("start", "--format=j"), ["json"]),
    (("runs", "--format", "nd"), ["ndjson"]),
    (("tasks", ""), ["check", "mark", "new"]),
    (("tasks", "mark", "--"), ["--help", "--run", "--format"]),
    (("logs", "RUN", "--stream", ""), ["stdout", "stderr", "both"]),
    (("logs", "RUN", "stage", "--tail", "5", "--st"), ["--stream"]),
    (("--v",), ["--version"]),
    (("start", "--", ""), []),
    (("status", "--watch", "--interval", ""), []),
]


def test_bash_completes_commands_options_and_choices(static: Shells) -> None:
    need("bash")
    for words, expected in STATIC:
        assert static.bash(*words) == expected, words


def test_bash_registers_the_function_for_the_command(static: Shells) -> None:
    need("bash")
    code = f'source "$0"; complete -p {PROG}'
    output = static.run("bash", "--norc", "--noprofile", "-c", code, static.paths["bash"])
    assert output.strip() == f"complete -F _codex_orchestrator {PROG}"


@pytest.mark.slow
def test_bash_lists_run_pipeline_and_task_ids_from_the_repository(shells: Shells) -> None:
    need("bash")
    newest, oldest = _runs(shells.repo)
    assert shells.bash("status", "") == [newest, oldest]
    assert shells.bash("logs", newest[:-3]) == [newest]
    assert shells.bash("resume", "--run=") == [newest, oldest]
    assert shells.bash("start", "") == ["alpha", "beta", "diagnostics"]
    assert shells.bash("plan", "b") == ["beta"]
    assert shells.bash("runs", "--pipeline", "al") == ["alpha"]
    assert shells.bash("runs", "--task", "") == ["task-one", "task-two"]
    assert shells.bash("start", "alpha", "--parent-run", "") == [newest, oldest]
    assert shells.bash("start", "alpha", "") == []  # one pipeline only


def test_a_broken_config_or_root_offers_nothing_and_prints_nothing(shells: Shells) -> None:
    need("bash")
    (shells.repo.root / "codex.orchestrator.json").write_text("{broken")
    assert shells.bash("start", "") == []
    shells.env["CODEX_ORCHESTRATOR_ROOT"] = str(shells.repo.root / "missing")
    assert shells.bash("status", "") == []


def test_zsh_runs_the_same_core(static: Shells) -> None:
    need("zsh")
    for words, expected in STATIC:
        _, found = static.zsh_core(*words)
        option, equals, value = words[-1].partition("=")
        typed = value if equals and option.startswith("--") else words[-1]
        assert [word for word in found if word.startswith(typed)] == sorted(expected), words


def test_zsh_and_fish_scripts_parse(static: Shells) -> None:
    need("zsh")
    need("fish")
    static.run("zsh", "-n", static.paths["zsh"])
    static.run("fish", "--no-config", "-n", static.paths["fish"])


def test_fish_completes_the_same(static: Shells) -> None:
    need("fish")
    for words, expected in STATIC:
        found = static.fish(" ".join((PROG, *words)))
        if words[-1].startswith("--") and "=" in words[-1]:
            found = [word.partition("=")[2] for word in found]
        assert found == sorted(expected), words


@pytest.mark.slow
def test_fish_lists_ids_and_shows_descriptions(shells: Shells) -> None:
    need("fish")
    newest, oldest = _runs(shells.repo)
    assert shells.fish(f"{PROG} status ") == sorted([newest, oldest])
    assert shells.fish(f"{PROG} start ") == ["alpha", "beta", "diagnostics"]
    assert shells.fish(f"{PROG} status --run={newest[:-2]}") == [f"--run={newest}"]
    code = f"source {shells.paths['fish']}; complete -C '{PROG} tas'"
    assert (
        shells.run("fish", "--no-config", "-c", code)
        == "tasks\ttask checklists and their manifest evidence\n"
    )


# --- TAB in a real terminal ------------------------------------------------------------------


class Pane:
    """A shell in a private tmux server (own socket), killed by `close`."""

    def __init__(self, shell: list[str], env: dict[str, str], cwd: Path) -> None:
        self.tmux = ["tmux", "-L", f"codex-completion-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
        command = f"cd {shlex.quote(str(cwd))} && exec {shlex.join(shell)}"
        new = [*self.tmux, "new-session", "-d", "-x", "160", "-y", "30", command]
        subprocess.run(new, check=True, env=env)

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", *keys], check=True)

    def wait(self, ready: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = subprocess.run(
                [*self.tmux, "capture-pane", "-p"], capture_output=True, text=True, check=True
            ).stdout
            if ready(screen) or time.monotonic() > deadline:
                assert ready(screen), screen
                return screen
            time.sleep(0.05)

    def interrupt(self) -> None:
        """Ctrl-C, then wait for the fresh empty prompt: keys typed while the shell still
        handles the interrupt may be dropped with the line it discards."""
        self.keys("C-c")
        self.wait(
            lambda screen: (
                _prompt_lines(screen)[-1:] == ["ready>"] and len(_prompt_lines(screen)) > 1
            )
        )

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, check=False)


def _prompt_lines(screen: str) -> list[str]:
    return [line.strip() for line in screen.splitlines() if line.startswith("ready>")]


@pytest.fixture
def pane(shells: Shells) -> Iterator[Callable[[list[str]], Pane]]:
    need("tmux")
    opened: list[Pane] = []

    def open_pane(shell: list[str]) -> Pane:
        opened.append(Pane(shell, shells.env, shells.repo.root))
        return opened[-1]

    try:
        yield open_pane
    finally:
        for each in opened:
            each.close()


def test_tab_in_an_interactive_bash(shells: Shells, pane: Callable[[list[str]], Pane]) -> None:
    need("bash")
    session = pane(["bash", "--norc", "--noprofile", "-i"])
    session.keys(f"PS1='ready> '; source {shells.paths['bash']}", "Enter")
    session.wait(lambda screen: screen.rstrip().endswith("ready>"))
    session.keys(f"{PROG} start --format=js", "Tab")
    session.wait(lambda screen: f"ready> {PROG} start --format=json" in screen)
    session.keys("C-u", f"{PROG} tasks m", "Tab")
    session.wait(lambda screen: f"ready> {PROG} tasks mark" in screen)


@pytest.mark.slow
def test_tab_in_an_interactive_zsh_shows_descriptions(
    shells: Shells, pane: Callable[[list[str]], Pane]
) -> None:
    need("zsh")
    session = pane(["zsh", "-f", "-i"])
    session.keys(
        f"autoload -Uz compinit && compinit -u -D && source {shells.paths['zsh']} && PS1='ready> '",
        "Enter",
    )
    session.wait(lambda screen: screen.rstrip().endswith("ready>"))
    session.keys(f"{PROG} tasks ", "Tab")
    screen = session.wait(lambda screen: "scaffold a new task" in screen)
    assert "check" in screen and "report checklist problems" in screen
    session.interrupt()
    session.keys(f"{PROG} start --format=js", "Tab")
    session.wait(lambda screen: f"{PROG} start --format=json" in screen)
    session.interrupt()
    session.keys(f"{PROG} start al", "Tab")
    session.wait(lambda screen: f"{PROG} start alpha" in screen)


# --- the values and the hot path ----------------------------------------------------------------


def test_candidates_are_newest_first_filtered_and_bounded(repo: Repo) -> None:
    repo.pipeline({"id": "s", "command": "true"})
    workspace = Workspace.from_env(repo.env)
    assert candidates("runs", workspace=workspace) == []
    cli = repo.root / ".runs" / "t" / "cli"
    cli.mkdir(parents=True)
    made = [f"2026-01-01T00-00-{n // 1000:02d}-{n % 1000:03d}Z-0000abcd" for n in range(600)]
    for run_id in made:
        (cli / run_id).mkdir()
    (cli / "not-a-run").mkdir()
    found = candidates("runs", workspace=workspace)
    assert len(found) == MAX_CANDIDATES and found == sorted(made, reverse=True)[:MAX_CANDIDATES]
    assert candidates("runs", "2026-01-01T00-00-00-0", workspace) == sorted(
        made[:100], reverse=True
    )
    assert candidates("tasks", workspace=workspace) == ["t"]
    assert candidates("pipelines", "ma", workspace) == ["main"]
    assert candidates("nonsense", workspace=workspace) == []


def test_no_command_imports_the_completion_module() -> None:
    run_python(
        "import sys\n"
        "from codex_orchestrator.cli import main\n"
        "main(['plan', 'diagnostics'])\n"
        "assert 'codex_orchestrator.completion' not in sys.modules\n"
    )


def test_every_subcommand_and_option_of_the_parser_is_in_each_script() -> None:
    texts = {shell: _script(shell) for shell in SHELLS}
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():  # type: ignore[union-attr]
            flags = [
                flag
                for each in sub._actions
                if each.help != argparse.SUPPRESS
                for flag in each.option_strings
            ]
            for text in texts.values():
                assert name in text and all(flag in text for flag in flags), name
    with pytest.raises(ValueError, match="unknown shell"):
        script("powershell", build_parser())


def test_the_cli_prints_the_scripts_and_lists_values(repo: Repo) -> None:
    for shell in SHELLS:
        printed = repo.cli("completion", shell)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == _script(shell)
    repo.write_config({"pipelines": [{"id": "main", "stages": [{"id": "a", "command": "true"}]}]})
    listed = repo.cli("completion", "--list", "pipelines", "--prefix=ma")
    assert (listed.returncode, listed.stdout) == (0, "main\n")
    assert_usage_error(repo.cli("completion"), "needs a shell")
    assert_usage_error(repo.cli("completion", "fsh"), "did you mean 'fish'?")
    assert_usage_error(repo.cli("completion", "--list", "stages"), "choose one of runs")
