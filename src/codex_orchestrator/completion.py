"""Shell completion for bash, zsh and fish, generated from the real argument parser.

`script` walks the CLI's whole parser once and writes a static script: the subcommands, their
options and the fixed choices of each argument are tables inside it, so completing a command
or an option never starts Python, and nothing here is imported by any other command. Only
an argument that takes a run id, a pipeline id or a task id makes the script ask the tool,
lazily, with ``codex-orchestrator completion --list KIND --prefix=TEXT`` (`candidates`).

The three scripts share one algorithm: walk the words before the cursor to find the
(sub)command and which option or positional the cursor is at, then offer that argument's
values, the command's options (after ``-``) or its subcommands. bash and zsh share its code
(POSIX ``case`` tables and a word walk both shells run); fish has its own spelling of it.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from codex_orchestrator.persistence.runs import task_ids
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.ids import RUN_ID_PATTERN

SHELLS = ("bash", "zsh", "fish")
VALUE_KINDS = ("runs", "pipelines", "tasks")
PROG = "codex-orchestrator"
#: At most this many values are listed, newest runs first.
MAX_CANDIDATES = 500
#: Arguments whose values the tool lists, by argparse ``dest`` (positionals / options).
_POSITIONAL_VALUES = {"run_id": "runs", "pipeline": "pipelines"}
_OPTION_VALUES = {
    "run_option": "runs",
    "parent_run": "runs",
    "pipeline": "pipelines",
    "task": "tasks",
}
_WORD = re.compile(r"-{0,2}[A-Za-z0-9][A-Za-z0-9_.+-]*")


class Argument(NamedTuple):
    """What an option or positional takes: fixed ``choices``, or values of ``kind``."""

    choices: tuple[str, ...] = ()
    kind: str | None = None


class Option(NamedTuple):
    """An option's spellings, what it takes, and its help (zsh and fish show it)."""

    flags: tuple[str, ...]
    argument: Argument | None  # None: a flag without a value
    help: str


class Command(NamedTuple):
    """A (sub)command: its path from the top (``""``, ``"tasks mark"``) and what it takes."""

    path: str
    help: str
    options: tuple[Option, ...]
    positionals: tuple[Argument, ...]
    subcommands: tuple[Command, ...]


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for ``shell`` (one of `SHELLS`), from the real parser (the CLI's
    whole parser, handed in so that this module stays below the CLI)."""
    commands = list(_walk(_command(parser, "", "")))
    if shell == "bash":
        return _bash(_sh_tables(commands))
    if shell == "zsh":
        return _zsh(_sh_tables(commands), commands)
    if shell == "fish":
        return _fish(commands)
    raise ValueError(f"unknown shell {shell!r}; choose one of {', '.join(SHELLS)}")


def candidates(kind: str, prefix: str = "", workspace: Workspace | None = None) -> list[str]:
    """Values of ``kind`` (`VALUE_KINDS`) starting with ``prefix``: run ids (newest first),
    pipeline ids, or task ids with runs; at most `MAX_CANDIDATES`, and none on any error (a
    completion never prints a complaint into the user's command line)."""
    try:
        place = workspace or Workspace.from_env()
        if kind == "runs":  # tasks with run directories, then their run directories
            values: list[str] = sorted(_run_ids(place.runs_dir, prefix), reverse=True)
        elif kind == "pipelines":
            from codex_orchestrator.pipelines.config import load_config

            values = list(load_config(place.root).pipelines)
        elif kind == "tasks":
            values = task_ids(place.runs_dir, place.out_dir)
        else:
            return []
    except Exception:  # a broken config or root: nothing to offer, and no traceback in a prompt
        return []
    return [value for value in values if value.startswith(prefix)][:MAX_CANDIDATES]


def _run_ids(runs_dir: Path, prefix: str) -> Iterator[str]:
    for task in task_ids(runs_dir, runs_dir):
        try:
            with os.scandir(runs_dir / task / "cli") as entries:
                for entry in entries:
                    if entry.name.startswith(prefix) and RUN_ID_PATTERN.fullmatch(entry.name):
                        yield entry.name
        except OSError:
            continue


# --- the parser as data --------------------------------------------------------------------


def _command(parser: argparse.ArgumentParser, path: str, help_text: str) -> Command:
    options: list[Option] = []
    positionals: list[Argument] = []
    subcommands: list[Command] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                subpath = f"{path} {name}".strip()
                subcommands.append(_command(sub, subpath, helps.get(name, "")))
        elif action.option_strings:
            argument = None
            if action.nargs != 0:
                argument = Argument(_choices(action), _OPTION_VALUES.get(action.dest))
            options.append(Option(tuple(action.option_strings), argument, _help(action)))
        else:
            positionals.append(Argument(_choices(action), _POSITIONAL_VALUES.get(action.dest)))
    return Command(path, help_text, tuple(options), tuple(positionals), tuple(subcommands))


def _choices(action: argparse.Action) -> tuple[str, ...]:
    return tuple(str(choice) for choice in action.choices or ())


def _help(action: argparse.Action) -> str:
    return " ".join(str(action.help or "").replace("%%", "%").split())


def _walk(command: Command) -> Iterator[Command]:
    yield command
    for sub in command.subcommands:
        yield from _walk(sub)


def _words(words: list[str]) -> str:
    """Words for a script table; each is checked, since the scripts do not quote them."""
    for word in words:
        if not _WORD.fullmatch(word):
            raise ValueError(f"{word!r} cannot go into a completion script unquoted")
    return " ".join(words)


def _spec(argument: Argument | None) -> str:
    """An argument's value spec in the tables: ``=a b`` (choices) or ``@kind`` (listed)."""
    if argument is None:
        return ""
    if argument.choices:
        return "=" + _words(list(argument.choices))
    return f"@{argument.kind}" if argument.kind else ""


def _flags(command: Command) -> list[str]:
    return [flag for option in command.options for flag in option.flags]


def _valued(command: Command) -> list[str]:
    return [flag for option in command.options if option.argument for flag in option.flags]


def _table(command: Command) -> Iterator[tuple[str, str]]:
    """(key, value) rows of the tables for one command."""
    path = command.path
    yield f"subs {path}", _words([sub.path.rsplit(" ", 1)[-1] for sub in command.subcommands])
    yield f"opts {path}", _words(_flags(command))
    yield f"valued {path}", f" {_words(_valued(command))} "
    for option in command.options:
        for flag in option.flags:
            if option.argument is not None:
                yield f"arg {path}|{flag}", _spec(option.argument)
    for index, argument in enumerate(command.positionals):
        yield f"arg {path}|{index}", _spec(argument)


def _described(command: Command) -> Iterator[tuple[str, str]]:
    """(word, description) of a command's subcommands, then its options."""
    for sub in command.subcommands:
        yield sub.path.rsplit(" ", 1)[-1], sub.help
    for option in command.options:
        for flag in option.flags:
            yield flag, option.help


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# --- bash and zsh ------------------------------------------------------------------------------


def _sh_tables(commands: list[Command]) -> str:
    rows = [
        f"        {_sh_quote(key)}) _co_reply={_sh_quote(value)} ;;"
        for command in commands
        for key, value in _table(command)
        if value.strip()
    ]
    return "\n".join(
        [
            "# What each (sub)command takes, from the parser: subs, opts, valued (options that",
            "# take a value), arg (an option's or the Nth positional's values: =choices, @kind).",
            "_codex_orchestrator_spec() {",
            '    case "$1 $2" in',
            *rows,
            "        *) _co_reply='' ;;",
            "    esac",
            "}",
            "",
            _SH_CORE,
        ]
    )


_SH_CORE = r"""# Walk the words between the command name and the cursor: the (sub)command path, the
# positionals seen, an option waiting for its value, and whether "--" ended the options.
_codex_orchestrator_context() {
    _co_path='' _co_count=0 _co_pending='' _co_stop=''
    local word
    for word in "$@"; do
        if [ -n "$_co_pending" ]; then _co_pending=''; continue; fi
        if [ -n "$_co_stop" ]; then _co_count=$((_co_count + 1)); continue; fi
        case "$word" in
            --) _co_stop=1; continue ;;
            --*=*) continue ;;
            -?*)
                _codex_orchestrator_spec valued "$_co_path"
                case "$_co_reply" in *" $word "*) _co_pending="$word" ;; esac
                continue ;;
        esac
        _codex_orchestrator_spec subs "$_co_path"
        case " $_co_reply " in
            *" $word "*) _co_path="${_co_path:+$_co_path }$word"; _co_count=0; continue ;;
        esac
        _co_count=$((_co_count + 1))
    done
}

# Candidates for the word at the cursor: $1 the command, $2 the current word, then the words
# between. Sets _co_kind (subs, opts or values), _co_words (the candidates) and _co_value
# (the text they complete: the current word, or what follows "=" in --option=value).
_codex_orchestrator_candidates() {
    local cmd="$1" spec=''
    _co_value="$2" _co_words='' _co_kind=values
    shift 2
    _codex_orchestrator_context "$@"
    [ -n "$_co_stop" ] && return
    if [ -n "$_co_pending" ]; then
        _codex_orchestrator_spec arg "$_co_path|$_co_pending"
        spec="$_co_reply"
    else
        case "$_co_value" in
            --*=*)
                _codex_orchestrator_spec arg "$_co_path|${_co_value%%=*}"
                spec="$_co_reply"
                _co_value="${_co_value#*=}" ;;
            -*)
                _codex_orchestrator_spec opts "$_co_path"
                _co_kind=opts _co_words="$_co_reply"
                return ;;
            *)
                _codex_orchestrator_spec subs "$_co_path"
                if [ -n "$_co_reply" ]; then _co_kind=subs _co_words="$_co_reply"; return; fi
                _codex_orchestrator_spec arg "$_co_path|$_co_count"
                spec="$_co_reply" ;;
        esac
    fi
    case "$spec" in  # quoted: a leading "=" is a command-path expansion in zsh
        '='*) _co_words="${spec#=}" ;;
        '@'*) _co_words="$(command "$cmd" completion --list "${spec#@}" --prefix="$_co_value" 2>/dev/null)" ;;
    esac
}"""


def _bash(tables: str) -> str:
    return f"""# bash completion for {PROG}; generated by `{PROG} completion bash`.
# Load it with: source <({PROG} completion bash)

{tables}

_codex_orchestrator() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" words=() i
    # bash splits "--option=value" at "=" (COMP_WORDBREAKS): put the pieces back together.
    for ((i = 1; i <= COMP_CWORD; i++)); do
        if [[ ${{COMP_WORDS[i]}} == "=" && ${{#words[@]}} -gt 0 && ${{words[-1]}} == -* ]]; then
            words[-1]+="="
        elif [[ ${{#words[@]}} -gt 0 && ${{words[-1]}} == --*= && $i -gt 1 && ${{COMP_WORDS[i-1]}} == "=" ]]; then
            words[-1]+="${{COMP_WORDS[i]}}"
        else
            words+=("${{COMP_WORDS[i]}}")
        fi
    done
    cur="${{words[-1]}}"
    unset 'words[-1]'
    _codex_orchestrator_candidates "${{COMP_WORDS[0]}}" "$cur" "${{words[@]}}"
    local IFS=$' \\t\\n'
    COMPREPLY=($(compgen -W "$_co_words" -- "$_co_value"))
}}
complete -F _codex_orchestrator {PROG}
"""


def _zsh(tables: str, commands: list[Command]) -> str:
    rows = []
    for command in commands:
        described = [
            _sh_quote(f"{word}:{help_text}" if help_text else word)
            for word, help_text in _described(command)
        ]
        if described:
            rows.append(f"        {_sh_quote(command.path)}) reply=({' '.join(described)}) ;;")
    described_table = "\n".join(
        [
            "_codex_orchestrator_describe() {",
            '    case "$1" in',
            *rows,
            "        *) reply=() ;;",
            "    esac",
            "}",
        ]
    )
    return f"""#compdef {PROG}
# zsh completion for {PROG}; generated by `{PROG} completion zsh`.
# Load it with `source <({PROG} completion zsh)` after compinit, or save it as
# _{PROG} in a directory of $fpath.

{tables}

{described_table}

_codex_orchestrator() {{
    _codex_orchestrator_candidates "${{words[1]}}" "${{words[CURRENT]}}" "${{(@)words[2,CURRENT-1]}}"
    local -a reply candidates
    if [[ $_co_kind == values ]]; then
        [[ ${{words[CURRENT]}} == --*=* ]] && compset -P '*='
        candidates=(${{=_co_words}})
        (( ${{#candidates}} )) && compadd -a candidates
        return
    fi
    _codex_orchestrator_describe "$_co_path"
    if [[ $_co_kind == opts ]]; then
        reply=(${{(M)reply:#-*}})
    else
        reply=(${{reply:#-*}})
    fi
    _describe -t "$_co_kind" "$_co_kind" reply
}}

if (( $+functions[compdef] )); then
    compdef _codex_orchestrator {PROG}
fi
"""


# --- fish --------------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(commands: list[Command]) -> str:
    rows = []
    for command in commands:
        for key, value in _table(command):
            if value.strip():
                rows += [
                    f"        case {_fish_quote(key)}",
                    f"            echo {_fish_quote(value)}",
                ]
        described = [
            _fish_quote(f"{word}\t{help_text}" if help_text else word)
            for word, help_text in _described(command)
        ]
        if described:
            rows += [
                f"        case {_fish_quote('described ' + command.path)}",
                f"            printf '%s\\n' {' '.join(described)}",
            ]
    table = "\n".join(
        [
            "function __codex_orchestrator_spec --argument-names what key",
            '    switch "$what $key"',
            *rows,
            "    end",
            "end",
        ]
    )
    return f"""# fish completion for {PROG}; generated by `{PROG} completion fish`.
# Load it with: {PROG} completion fish | source
# (or save it as ~/.config/fish/completions/{PROG}.fish)

{table}

function __codex_orchestrator_complete
    set -l tokens (commandline -opc)
    set -l cmd $tokens[1]
    set -e tokens[1]
    set -l value (commandline -ct)
    set -l path ''
    set -l count 0
    set -l pending ''
    set -l stop 0
    for word in $tokens
        if test -n "$pending"
            set pending ''
            continue
        end
        if test $stop = 1
            set count (math $count + 1)
            continue
        end
        if test "$word" = '--'
            set stop 1
            continue
        end
        if string match -q -- '--*=*' $word
            continue
        end
        if string match -q -r -- '^-.' $word
            if contains -- $word (string split ' ' -- (__codex_orchestrator_spec valued "$path"))
                set pending $word
            end
            continue
        end
        if contains -- $word (string split ' ' -- (__codex_orchestrator_spec subs "$path"))
            set path (string trim -- "$path $word")
            set count 0
            continue
        end
        set count (math $count + 1)
    end
    test $stop = 1; and return
    set -l prefix ''
    set -l spec ''
    set -l subs (__codex_orchestrator_spec subs "$path")
    if test -n "$pending"
        set spec (__codex_orchestrator_spec arg "$path|$pending")
    else if string match -q -- '--*=*' $value
        set -l parts (string split -m 1 '=' -- $value)
        set prefix "$parts[1]="
        set value $parts[2]
        set spec (__codex_orchestrator_spec arg "$path|$parts[1]")
    else if string match -q -- '-*' $value
        __codex_orchestrator_spec described "$path" | string match -- '-*'
        return
    else if test -n "$subs"
        __codex_orchestrator_spec described "$path" | string match -v -- '-*'
        return
    else
        set spec (__codex_orchestrator_spec arg "$path|$count")
    end
    switch "$spec"
        case '=*'
            for choice in (string split ' ' -- (string sub -s 2 -- $spec))
                echo $prefix$choice
            end
        case '@*'
            for found in (command $cmd completion --list (string sub -s 2 -- $spec) --prefix=$value 2>/dev/null)
                echo $prefix$found
            end
    end
end

complete -c {PROG} -f -a '(__codex_orchestrator_complete)'
"""
