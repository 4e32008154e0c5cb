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
import sys
from collections.abc import Sequence
from typing import Any

from codex_orchestrator import __version__
from codex_orchestrator.engine.signals import absorb_wake_signal
from codex_orchestrator.errors import EXIT_FAULT, EXIT_USAGE, OrchestratorError, UsageError
from codex_orchestrator.util.console import Reporter, ensure_standard_streams

DEBUG_ENV = "CODEX_ORCHESTRATOR_DEBUG"


class _Formatter(argparse.HelpFormatter):
    """Help text as wide as ``$COLUMNS`` (default 100), without probing the terminal at start-up."""

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
        raise OrchestratorError(f"{message} (see '{self.prog} --help')")


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text")


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
        "--no-cache",
        action="store_true",
        help="run every stage, even those the stage cache holds (fresh successes are stored)",
    )
    parser.add_argument("--executor", metavar="NAME", help="where stages run: local or dask")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="the Dask scheduler")


def _add_run(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("run_id", nargs="?", metavar="RUN")
    parser.add_argument("--run", dest="run_option", metavar="RUN")
    parser.set_defaults(run_required=required)


def _add_start(sub: argparse._SubParsersAction[_Parser]) -> None:
    start = sub.add_parser("start", help="run a pipeline for a task")
    start.add_argument("pipeline", nargs="?", metavar="PIPELINE")
    start.add_argument("--task", metavar="ID")
    start.add_argument("--parent-run", metavar="RUN")
    start.add_argument("--approval-policy", metavar="POLICY")
    _add_launch(start)
    _add_format(start)


def _add_plan(sub: argparse._SubParsersAction[_Parser]) -> None:
    plan = sub.add_parser("plan", help="show the stages a pipeline would run")
    plan.add_argument("pipeline", nargs="?", metavar="PIPELINE")
    plan.add_argument("--task", metavar="ID")
    _add_format(plan)


def _add_status(sub: argparse._SubParsersAction[_Parser]) -> None:
    status = sub.add_parser("status", help="report a run's state")
    _add_run(status)
    status.add_argument("--task", metavar="ID")
    status.add_argument("--watch", action="store_true", help="follow the run until it ends")
    status.add_argument("--interval", default="2", metavar="SECONDS")
    _add_format(status)


def _add_resume(sub: argparse._SubParsersAction[_Parser]) -> None:
    resume = sub.add_parser("resume", help="continue a failed or dead run")
    _add_run(resume)
    resume.add_argument("--task", metavar="ID")
    resume.add_argument("--token", metavar="TOKEN")
    resume.add_argument("--actor", metavar="NAME")
    resume.add_argument("--reason", metavar="TEXT")
    resume.add_argument("--force", action="store_true", help="resume even if the run looks alive")
    _add_launch(resume)
    _add_format(resume)


def _add_tasks(sub: argparse._SubParsersAction[_Parser]) -> None:
    tasks = sub.add_parser("tasks", help="task checklists and their manifest evidence")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", parser_class=_Parser)
    check = tasks_sub.add_parser("check", help="report checklist problems")
    check.add_argument("task", nargs="?", metavar="TASK")
    _add_format(check)
    mark = tasks_sub.add_parser("mark", help="flip an item to [x] with a run's manifest")
    mark.add_argument("task", metavar="TASK")
    mark.add_argument("item", metavar="ITEM")
    mark.add_argument("--run", dest="run_option", required=True, metavar="RUN")
    _add_format(mark)
    new = tasks_sub.add_parser("new", help="scaffold a new task's collateral")
    new.add_argument("task", metavar="TASK")
    new.add_argument("--title", required=True, metavar="TEXT")
    _add_format(new)


def _add_spec_guard(sub: argparse._SubParsersAction[_Parser]) -> None:
    guard = sub.add_parser("spec-guard", help="check that code changes come with spec changes")
    guard.add_argument("--dry-run", action="store_true")
    guard.add_argument("--base", metavar="REF")
    _add_format(guard)


def _add_review(sub: argparse._SubParsersAction[_Parser]) -> None:
    review = sub.add_parser("review", help="hand a run to review")
    _add_run(review, required=False)
    review.add_argument("--task", metavar="ID")
    _add_format(review)


def _add_cancel(sub: argparse._SubParsersAction[_Parser]) -> None:
    cancel = sub.add_parser("cancel", help="stop a run from any terminal")
    _add_run(cancel)
    cancel.add_argument("--task", metavar="ID")
    cancel.add_argument("--reason", metavar="TEXT")
    cancel.add_argument("--actor", metavar="NAME")
    cancel.add_argument(
        "--wait", action="store_true", help="return once the run is recorded as ended"
    )
    _add_format(cancel)


def _add_runs(sub: argparse._SubParsersAction[_Parser]) -> None:
    runs = sub.add_parser("runs", help="list runs of every task, newest first")
    runs.add_argument("--task", metavar="ID")
    runs.add_argument("--status", metavar="STATUS")
    runs.add_argument("--pipeline", metavar="ID")
    runs.add_argument("--since", metavar="WHEN", help="2h, 7d or an ISO date")
    runs.add_argument("--limit", metavar="N", help="at most N runs (default 20; 0: all)")
    runs.add_argument("--format", choices=("text", "json", "ndjson"), default="text")


def _add_logs(sub: argparse._SubParsersAction[_Parser]) -> None:
    logs = sub.add_parser("logs", help="print a run's stored stage output")
    _add_run(logs)
    logs.add_argument("stage", nargs="?", metavar="STAGE")
    logs.add_argument("--task", metavar="ID")
    logs.add_argument("--stream", choices=("stdout", "stderr", "both"), default="both")
    logs.add_argument("--tail", metavar="N", help="only the last N lines of each log")
    logs.add_argument("--follow", action="store_true", help="keep printing until the run ends")
    logs.add_argument(
        "--max-bytes",
        metavar="N",
        help="with --format json: at most N bytes of log text in all (the tails)",
    )
    _add_format(logs)


def _add_prune(sub: argparse._SubParsersAction[_Parser]) -> None:
    prune = sub.add_parser("prune", help="delete old run directories, keeping history")
    prune.add_argument("--task", metavar="ID")
    prune.add_argument("--keep", metavar="N", help="keep the N newest runs per task and pipeline")
    prune.add_argument("--older-than", metavar="AGE", help="only runs that ended before AGE ago")
    prune.add_argument("--status", metavar="STATUS")
    prune.add_argument("--include-evidence", action="store_true")
    prune.add_argument("--dry-run", action="store_true")
    _add_format(prune)


def _add_stats(sub: argparse._SubParsersAction[_Parser]) -> None:
    stats = sub.add_parser("stats", help="success rates and durations from metrics.json")
    stats.add_argument("--task", metavar="ID")
    stats.add_argument("--since", metavar="WHEN", help="2h, 7d or an ISO date")
    stats.add_argument(
        "--write", action="store_true", help="write <runs>/<task>/metrics-summary.json"
    )
    _add_format(stats)


def _add_report(sub: argparse._SubParsersAction[_Parser]) -> None:
    report = sub.add_parser("report", help="write a run's (or a task's) HTML report")
    _add_run(report, required=False)
    report.add_argument("--task", metavar="ID", help="without RUN: the task's page of runs")
    _add_format(report)


def _add_mcp(sub: argparse._SubParsersAction[_Parser]) -> None:
    mcp = sub.add_parser("mcp", help="serve the Model Context Protocol over stdio (for agents)")
    mcp.add_argument(
        "--read-only",
        action="store_true",
        help="offer only plan, status, wait, runs, logs, tasks_check",
    )


COMMANDS = {
    "start": ("start", _add_start),
    "plan": ("plan", _add_plan),
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
}


#: What ``--help`` says the tool is (for its user; the module docstring is for its developers).
DESCRIPTION = (
    "Run a repository's engineering pipelines and keep a durable, reviewable record of every run."
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser: every command, or just ``only`` (cheaper at start-up)."""
    parser = _Parser(prog="codex-orchestrator", description=DESCRIPTION)
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
        args = build_parser(first if first in COMMANDS else None).parse_args(arguments)
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
