"""Command-line entry point: parse arguments, dispatch to a command, return an exit code.

Each command lives in ``codex_orchestrator.commands.<name>`` and is imported only when used,
which keeps the cold start of ``status`` and ``plan`` small.

No traceback reaches the user: bad input is one line and exit 2; an environment fault (a file
that cannot be written, a full disk) or an internal error is one line naming the command and
the path, exit 1 (``CODEX_ORCHESTRATOR_DEBUG=1`` adds the traceback). Closed standard streams
and readers that go away are not errors (see `output`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from codex_orchestrator import __version__
from codex_orchestrator.engine.signals import absorb_wake_signal
from codex_orchestrator.errors import EXIT_FAULT, EXIT_USAGE, OrchestratorError, UsageError
from codex_orchestrator.util.console import Reporter, ensure_standard_streams

DEBUG_ENV = "CODEX_ORCHESTRATOR_DEBUG"


DESCRIPTION = """\
Run a repository's engineering pipelines (lint, test, build, or stages you define) for a task,
and keep a durable, reviewable record of every run: manifest, logs, error files, metrics.
Linux only. Config: codex.orchestrator.json, found from the working directory up."""

EPILOG = """\
examples:
  codex-orchestrator pipelines                 what this repository can run
  codex-orchestrator start                     run the default pipeline
  codex-orchestrator status                    the newest run of the task
  codex-orchestrator logs @last test           a stage's output
  codex-orchestrator COMMAND --help            a command's options and examples

RUN is a run id, a unique prefix or suffix of one (6+ characters), @last or @last-N."""

RUN_HELP = "a run id, a unique prefix or suffix of one (6+ characters), @last or @last-N"
TASK_HELP = "the task (default: $MCP_RUNNER_TASK_ID, else 'default')"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help text as wide as ``$COLUMNS`` (default 100), without probing the terminal at start-up;
    descriptions and example epilogs keep their lines."""

    def __init__(self, prog: str) -> None:
        from codex_orchestrator.util.numeric import number_or_none

        columns = number_or_none(os.environ.get("COLUMNS", ""))
        width = int(columns) if columns is not None and 20 <= columns <= 1000 else 100
        super().__init__(prog, width=width - 2)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so errors follow our conventions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise OrchestratorError(f"{_with_suggestion(message)} (see '{self.prog} --help')")


def _with_suggestion(message: str) -> str:
    """argparse's "invalid choice" message, with the nearest choice when one is a likely typo."""
    invalid = re.search(r"invalid choice: '?([^'\s]*)'? \(choose from (.*)\)", message)
    if invalid is None:
        return message
    from codex_orchestrator.util.suggest import did_you_mean

    choices = re.findall(r"[^',\s]+", invalid.group(2))
    return message.replace(" (choose", f"{did_you_mean(invalid.group(1), choices)} (choose", 1)


def _command(
    sub: argparse._SubParsersAction[_Parser], name: str, summary: str, examples: str
) -> _Parser:
    """A subcommand with its one-line summary and an epilog of examples."""
    parser: _Parser = sub.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog="examples:\n" + examples.rstrip("\n"),
    )
    return parser


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text for people (default), or one JSON document on stdout for programs",
    )


def _add_task(parser: argparse.ArgumentParser, help_text: str = TASK_HELP) -> None:
    parser.add_argument("--task", metavar="ID", help=help_text)


def _add_launch(parser: argparse.ArgumentParser) -> None:
    """The options of a command that runs stages (``start``, ``resume``)."""
    parser.add_argument(
        "--max-parallel",
        metavar="N",
        help="stages of a graph pipeline run at once, unless the pipeline sets maxParallel",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="continue the run in the background and return at once",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="without a live view (a pipe, CI), print only the summary, not each stage's output",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="run every stage, even those the stage cache holds (fresh successes are stored)",
    )
    parser.add_argument("--executor", metavar="NAME", help="where stages run: local or dask")
    parser.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="the Dask scheduler (with --executor dask)"
    )


def _add_run(parser: argparse.ArgumentParser, required: bool = True, newest: bool = False) -> None:
    shown = f"{RUN_HELP}; default: @last" if newest else RUN_HELP
    parser.add_argument("run_id", nargs="?", metavar="RUN", help=shown)
    parser.add_argument("--run", dest="run_option", metavar="RUN", help="RUN, as an option")
    parser.set_defaults(run_required=required)


def _add_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        action="append",
        metavar="STAGE[,STAGE]",
        help="only these stages (repeatable), with the stages they need in a graph",
    )


def _add_start(sub: argparse._SubParsersAction[_Parser]) -> None:
    start = _command(
        sub,
        "start",
        "run a pipeline for a task",
        """\
  codex-orchestrator start                        the config's defaultPipeline (else diagnostics)
  codex-orchestrator start ci --task 0412-login   pipeline ci, recorded under task 0412-login
  codex-orchestrator start --detach --format json run in the background; print the run id
  codex-orchestrator start ci --only test         stage test, with the stages it needs
  codex-orchestrator start ci -- -k slow          ARGS for the stages: $CODEX_ORCHESTRATOR_ARGS
""",
    )
    start.add_argument(
        "pipeline",
        nargs="?",
        metavar="PIPELINE",
        help="the pipeline to run (default: the config's defaultPipeline, else diagnostics)",
    )
    _add_task(start)
    start.add_argument(
        "--parent-run", metavar="RUN", help="record the run as a child of RUN (" + RUN_HELP + ")"
    )
    start.add_argument(
        "--approval-policy",
        metavar="POLICY",
        help="a label recorded in the manifest for the agent's approval policy; it is only "
        "recorded and changes nothing about how the run goes",
    )
    _add_only(start)
    _add_launch(start)
    _add_format(start)


def _add_plan(sub: argparse._SubParsersAction[_Parser]) -> None:
    plan = _command(
        sub,
        "plan",
        "show the stages a pipeline would run, running nothing",
        """\
  codex-orchestrator plan                 the default pipeline's stages and their commands
  codex-orchestrator plan ci --format json
""",
    )
    plan.add_argument(
        "pipeline", nargs="?", metavar="PIPELINE", help="the pipeline (default: as for start)"
    )
    _add_task(plan)
    _add_only(plan)
    _add_format(plan)


def _add_pipelines(sub: argparse._SubParsersAction[_Parser]) -> None:
    pipelines = _command(
        sub,
        "pipelines",
        "list the pipelines of this repository with their stages",
        """\
  codex-orchestrator pipelines
  codex-orchestrator pipelines --format json
""",
    )
    _add_format(pipelines)


def _add_status(sub: argparse._SubParsersAction[_Parser]) -> None:
    status = _command(
        sub,
        "status",
        "report a run's state",
        """\
  codex-orchestrator status                  the task's newest run
  codex-orchestrator status 0a1b2c3d         the run whose id ends with 0a1b2c3d
  codex-orchestrator status @last --watch    follow it until it ends; exit with its code
""",
    )
    _add_run(status, required=False, newest=True)
    _add_task(status, "look among this task's runs (and its newest for @last)")
    status.add_argument("--watch", action="store_true", help="follow the run until it ends")
    status.add_argument(
        "--interval", default="2", metavar="SECONDS", help="with --watch: seconds between checks"
    )
    _add_format(status)


def _add_resume(sub: argparse._SubParsersAction[_Parser]) -> None:
    resume = _command(
        sub,
        "resume",
        "continue a failed or dead run",
        """\
  codex-orchestrator resume @last          re-run the stages of the newest run that did not pass
  codex-orchestrator resume 0a1b2c3d --token "$TOKEN" --actor ci --reason "flaky network"
""",
    )
    _add_run(resume)
    _add_task(resume, "look among this task's runs (and its newest for @last)")
    resume.add_argument(
        "--token", metavar="TOKEN", help="the run's resume token (default: read .resume-token)"
    )
    resume.add_argument("--actor", metavar="NAME", help="who resumes (default: the user name)")
    resume.add_argument("--reason", metavar="TEXT", help="why, recorded in the manifest")
    resume.add_argument("--force", action="store_true", help="resume even if the run looks alive")
    _add_launch(resume)
    _add_format(resume)


def _add_tasks(sub: argparse._SubParsersAction[_Parser]) -> None:
    tasks = _command(
        sub,
        "tasks",
        "task checklists and their manifest evidence",
        """\
  codex-orchestrator tasks check
  codex-orchestrator tasks mark 0412-login "tests pass" --run @last
  codex-orchestrator tasks new 0413-logout --title "Log out everywhere"
""",
    )
    tasks_sub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", parser_class=_Parser)
    check = _command(
        tasks_sub,
        "check",
        "report checklist problems (items marked without evidence, evidence that is not there)",
        "  codex-orchestrator tasks check 0412-login --format json\n",
    )
    check.add_argument("task", nargs="?", metavar="TASK", help="one task (default: every task)")
    _add_format(check)
    mark = _command(
        tasks_sub,
        "mark",
        "flip an item to [x] with a succeeded run's manifest as its evidence",
        '  codex-orchestrator tasks mark 0412-login "tests pass" --run @last\n',
    )
    mark.add_argument("task", metavar="TASK", help="the task whose checklist holds the item")
    mark.add_argument("item", metavar="ITEM", help="the item: its id, or the start of its text")
    mark.add_argument(
        "--run",
        dest="run_option",
        required=True,
        metavar="RUN",
        help=f"the succeeded run of the task that proves it ({RUN_HELP})",
    )
    _add_format(mark)
    new = _command(
        tasks_sub,
        "new",
        "scaffold a new task's collateral (spec, checklist, index entry)",
        '  codex-orchestrator tasks new 0413-logout --title "Log out everywhere"\n',
    )
    new.add_argument("task", metavar="TASK", help="the new task's id")
    new.add_argument("--title", required=True, metavar="TEXT", help="the task's title")
    _add_format(new)


def _add_spec_guard(sub: argparse._SubParsersAction[_Parser]) -> None:
    guard = _command(
        sub,
        "spec-guard",
        "check that code changes come with spec changes",
        """\
  codex-orchestrator spec-guard --base origin/main
  codex-orchestrator spec-guard --dry-run      report findings without failing
""",
    )
    guard.add_argument("--dry-run", action="store_true", help="report findings; exit 0 anyway")
    guard.add_argument(
        "--base",
        metavar="REF",
        help="compare with this git ref (default: the merge base with main or master)",
    )
    _add_format(guard)


def _add_review(sub: argparse._SubParsersAction[_Parser]) -> None:
    review = _command(
        sub,
        "review",
        "write a run's review.md and hand it to codex review when installed",
        """\
  codex-orchestrator review                 the task's newest run
  codex-orchestrator review 0a1b2c3d
""",
    )
    _add_run(review, required=False, newest=True)
    _add_task(review, "look among this task's runs (and its newest by default)")
    _add_format(review)


def _add_cancel(sub: argparse._SubParsersAction[_Parser]) -> None:
    cancel = _command(
        sub,
        "cancel",
        "stop a run from any terminal",
        """\
  codex-orchestrator cancel @last --wait
  codex-orchestrator cancel 0a1b2c3d --reason "wrong branch"
""",
    )
    _add_run(cancel)
    _add_task(cancel, "look among this task's runs (and its newest for @last)")
    cancel.add_argument("--reason", metavar="TEXT", help="why, recorded in the manifest")
    cancel.add_argument("--actor", metavar="NAME", help="who cancels (default: the user name)")
    cancel.add_argument(
        "--wait", action="store_true", help="return once the run is recorded as ended"
    )
    _add_format(cancel)


def _add_runs(sub: argparse._SubParsersAction[_Parser]) -> None:
    runs = _command(
        sub,
        "runs",
        "list runs of every task, newest first",
        """\
  codex-orchestrator runs --since 2h
  codex-orchestrator runs --task 0412-login --status failed --format ndjson
""",
    )
    _add_task(runs, "only this task's runs")
    runs.add_argument(
        "--status", metavar="STATUS", help="only runs in this status (failed, succeeded, stale…)"
    )
    runs.add_argument("--pipeline", metavar="ID", help="only runs of this pipeline")
    runs.add_argument("--since", metavar="WHEN", help="only runs since: 2h, 7d or an ISO date")
    runs.add_argument("--limit", metavar="N", help="at most N runs (default 20; 0: all)")
    runs.add_argument(
        "--format",
        choices=("text", "json", "ndjson"),
        default="text",
        help="text (default), one JSON document, or one JSON object a line",
    )


def _add_logs(sub: argparse._SubParsersAction[_Parser]) -> None:
    logs = _command(
        sub,
        "logs",
        "print a run's stored stage output",
        """\
  codex-orchestrator logs                      every stage of the task's newest run
  codex-orchestrator logs @last test --tail 50
  codex-orchestrator logs 0a1b2c3d --follow    print output as it comes until the run ends
""",
    )
    _add_run(logs, required=False, newest=True)
    logs.add_argument("stage", nargs="?", metavar="STAGE", help="one stage (default: every one)")
    _add_task(logs, "look among this task's runs (and its newest for @last)")
    logs.add_argument(
        "--stream",
        choices=("stdout", "stderr", "both"),
        default="both",
        help="which output (default: both)",
    )
    logs.add_argument("--tail", metavar="N", help="only the last N lines of each log")
    logs.add_argument("--follow", action="store_true", help="keep printing until the run ends")
    logs.add_argument(
        "--max-bytes",
        metavar="N",
        help="with --format json: at most N bytes of log text in all (the tails)",
    )
    _add_format(logs)


def _add_prune(sub: argparse._SubParsersAction[_Parser]) -> None:
    prune = _command(
        sub,
        "prune",
        "delete old run directories, keeping history",
        """\
  codex-orchestrator prune --keep 10 --dry-run
  codex-orchestrator prune --older-than 30d --status failed
""",
    )
    _add_task(prune, "only this task's runs")
    prune.add_argument("--keep", metavar="N", help="keep the N newest runs per task and pipeline")
    prune.add_argument("--older-than", metavar="AGE", help="only runs that ended before AGE ago")
    prune.add_argument("--status", metavar="STATUS", help="only runs in this status")
    prune.add_argument(
        "--include-evidence",
        action="store_true",
        help="also delete runs a task checklist cites as evidence",
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    _add_format(prune)


def _add_stats(sub: argparse._SubParsersAction[_Parser]) -> None:
    stats = _command(
        sub,
        "stats",
        "success rates and durations from metrics.json",
        """\
  codex-orchestrator stats --since 7d
  codex-orchestrator stats --task 0412-login --write
""",
    )
    _add_task(stats, "only this task")
    stats.add_argument("--since", metavar="WHEN", help="only runs since: 2h, 7d or an ISO date")
    stats.add_argument(
        "--write", action="store_true", help="write <runs>/<task>/metrics-summary.json"
    )
    _add_format(stats)


def _add_report(sub: argparse._SubParsersAction[_Parser]) -> None:
    report = _command(
        sub,
        "report",
        "write a run's (or a task's) HTML report, or a run's JUnit XML",
        """\
  codex-orchestrator report @last                    the newest run's report.html
  codex-orchestrator report --task 0412-login        the task's page of runs
  codex-orchestrator report @last --junit junit.xml  JUnit XML for CI test views
""",
    )
    _add_run(report, required=False)
    _add_task(report, "without RUN: the task's page of runs; with RUN: look among its runs")
    report.add_argument(
        "--junit",
        metavar="PATH",
        help="write the run's JUnit XML (one testcase per stage) to PATH instead of HTML",
    )
    _add_format(report)


def _add_mcp(sub: argparse._SubParsersAction[_Parser]) -> None:
    mcp = _command(
        sub,
        "mcp",
        "serve the Model Context Protocol over stdio (for agents)",
        """\
  codex-orchestrator mcp
  codex-orchestrator mcp --read-only
""",
    )
    mcp.add_argument(
        "--read-only",
        action="store_true",
        help="offer only pipelines, plan, status, wait, runs, logs, tasks_check",
    )


def _add_completion(sub: argparse._SubParsersAction[_Parser]) -> None:
    completion = _command(
        sub,
        "completion",
        "print a shell completion script",
        """\
  source <(codex-orchestrator completion bash)         in ~/.bashrc
  source <(codex-orchestrator completion zsh)          in ~/.zshrc, after compinit
  codex-orchestrator completion fish | source          in ~/.config/fish/config.fish
""",
    )
    completion.add_argument(
        "shell", nargs="?", choices=("bash", "zsh", "fish"), help="the shell: bash, zsh or fish"
    )
    # what the scripts ask for run, pipeline and task ids; not for people
    completion.add_argument("--list", metavar="KIND", help=argparse.SUPPRESS)
    completion.add_argument("--prefix", default="", metavar="TEXT", help=argparse.SUPPRESS)
    # the scripts describe every command: the command gets the whole parser, not just its own
    completion.set_defaults(whole_parser=build_parser)


COMMANDS = {
    "start": ("start", _add_start),
    "plan": ("plan", _add_plan),
    "pipelines": ("pipelines", _add_pipelines),
    "status": ("status", _add_status),
    "resume": ("resume", _add_resume),
    "tasks": ("tasks", _add_tasks),
    "spec-guard": ("spec_guard", _add_spec_guard),
    "review": ("review", _add_review),
    "cancel": ("cancel", _add_cancel),
    "runs": ("runs", _add_runs),
    "logs": ("logs", _add_logs),
    "prune": ("prune", _add_prune),
    "stats": ("stats", _add_stats),
    "report": ("report", _add_report),
    "mcp": ("mcp", _add_mcp),
    "completion": ("completion", _add_completion),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser: every command, or just ``only`` (cheaper at start-up)."""
    parser = _Parser(prog="codex-orchestrator", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (_, add) in COMMANDS.items():
        if only is None or name == only:
            add(sub)
    return parser


def _requested_format(argv: Sequence[str]) -> str:
    for index, arg in enumerate(argv):
        if arg == "--format=json" or (
            arg == "--format" and argv[index + 1 : index + 2] == ["json"]
        ):
            return "json"
    return "text"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` and return the process exit code."""
    ensure_standard_streams()
    absorb_wake_signal()
    arguments = list(sys.argv[1:] if argv is None else argv)
    reporter = Reporter(_requested_format(arguments))
    try:
        _check_arguments(arguments)
        first = arguments[0] if arguments else None
        arguments, stage_args = _split_stage_args(arguments)
        parser = build_parser(first if first in COMMANDS else None)
        args, unknown = parser.parse_known_args(arguments)
        if unknown:
            raise UsageError(_unrecognized(parser, args, unknown))
        args.stage_args = stage_args
        if args.command is None or (args.command == "tasks" and args.tasks_command is None):
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        reporter = Reporter(getattr(args, "format", "text"))
        if hasattr(args, "run_required"):
            args.run_id = _run_argument(args)
        module = importlib.import_module(f"codex_orchestrator.commands.{COMMANDS[args.command][0]}")
        exit_code: int = module.run(args, reporter)
        return exit_code
    except OrchestratorError as error:
        reporter.error(error.message, error.exit_code)
        return error.exit_code
    except KeyboardInterrupt:
        reporter.error("interrupted", 130)
        return 130
    except Exception as error:  # the last resort: one line, never a traceback
        reporter.error(_fault_message(arguments, error), EXIT_FAULT)
        if os.environ.get(DEBUG_ENV) == "1":
            import traceback

            traceback.print_exc()
        return EXIT_FAULT


def _unrecognized(
    parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: list[str]
) -> str:
    """argparse's "unrecognized arguments" line, with the nearest option of the (sub)command
    for a mistyped one (``--fromat``: did you mean ``--format``?)."""
    from codex_orchestrator.util.suggest import did_you_mean

    command = parser
    for name in (getattr(args, "command", None), getattr(args, "tasks_command", None)):
        subparsers = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if name is None or not subparsers:
            break
        command = subparsers[0].choices[name]
    options = [flag for action in command._actions for flag in action.option_strings]
    hint = "".join(
        did_you_mean(word.partition("=")[0], options) for word in unknown if word.startswith("-")
    )
    return f"unrecognized arguments: {' '.join(unknown)}{hint} (see '{command.prog} --help')"


def _split_stage_args(arguments: list[str]) -> tuple[list[str], list[str]]:
    """``start ... -- ARGS``: the arguments before ``--``, and ARGS (passed to the stages)."""
    if arguments[:1] != ["start"] or "--" not in arguments:
        return arguments, []
    split = arguments.index("--")
    return arguments[:split], arguments[split + 1 :]


def _check_arguments(arguments: list[str]) -> None:
    """Refuse argument bytes that are not UTF-8 (Python keeps them as lone surrogates, which
    no record can hold): one line naming the argument, exit 2."""
    for position, argument in enumerate(arguments, start=1):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            shown = argument.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            raise UsageError(
                f"argument {position} ({shown}) is not valid UTF-8; pass text in UTF-8"
            ) from None


def _fault_message(arguments: list[str], error: Exception) -> str:
    """``<command>: <what failed>: <path>`` for an environment fault or an internal error."""
    operation = " ".join(arguments[:2] if arguments[:1] == ["tasks"] else arguments[:1]) or "cli"
    debug = f"set {DEBUG_ENV}=1 for the traceback"
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        reason = error.strerror or str(error) or type(error).__name__
        return f"{operation}: {reason}{where} (an environment fault: fix it and retry; {debug})"
    return (
        f"{operation}: internal error: {type(error).__name__}: {error} (please report it; {debug})"
    )


def _run_argument(args: argparse.Namespace) -> str | None:
    positional, option = args.run_id, args.run_option
    if positional and option and positional != option:
        raise OrchestratorError(
            f"two different runs given ({positional!r} and {option!r}); give one"
        )
    run_id: str | None = positional or option
    if run_id is None and args.run_required:
        raise OrchestratorError(f"{args.command} needs a run id: {args.command} RUN (or --run RUN)")
    return run_id
