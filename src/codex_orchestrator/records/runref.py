"""Run references: how every command (and every MCP tool, through the CLI) names a run.

A RUN is a full run id, a unique prefix or suffix of one (at least `MIN_PARTIAL` characters:
``2026-11-25T22-26`` or the random tail ``66e25530``), or ``@last``: the newest run of the task
(``--task``, else ``MCP_RUNNER_TASK_ID``, else ``default``); ``@last-N`` is the N-th before it.
A prefix or suffix that fits several runs is bad input (exit 2) listing them. `resolve_run` is
the one resolver; nothing else turns a RUN argument into a run directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from codex_orchestrator.errors import InvalidIdError, RunNotFoundError, UsageError
from codex_orchestrator.records.workspace import Workspace, resolve_task_id
from codex_orchestrator.util.ids import RUN_ID_PATTERN, is_valid_id, validate_id
from codex_orchestrator.util.safefs import scan_directory
from codex_orchestrator.util.wording import plural

LAST = "@last"
MIN_PARTIAL = 6
#: Candidates named in an "ambiguous" message; the rest are counted.
MAX_LISTED = 8
_LAST_PATTERN = re.compile(r"@last(?:-(\d{1,6}))?")
FORMS = f"a run id, a unique prefix or suffix of one ({MIN_PARTIAL}+ characters), @last or @last-N"


class ResolvedRun(NamedTuple):
    """The run a reference names: its task, full id and directory."""

    task_id: str
    run_id: str
    run_dir: Path


def check_reference(reference: str) -> str:
    """``reference`` when it has the form of a run reference (`InvalidIdError`, exit 2,
    otherwise); whether such a run exists is `resolve_run`'s question."""
    if _LAST_PATTERN.fullmatch(reference):
        return reference
    try:
        return validate_id(reference, "run")
    except InvalidIdError as error:
        raise InvalidIdError(f"{error.message}; a RUN is {FORMS}") from None


def resolve_run(
    workspace: Workspace, reference: str, task: str | None = None, *, newest_of: str | None = None
) -> ResolvedRun:
    """The run ``reference`` names, among the runs of ``task`` when given, else of every task;
    ``@last`` is the newest of ``newest_of`` (else of ``task``, else of the task from the
    environment). `RunNotFoundError` or `UsageError`, exit 2."""
    task_filter = validate_id(task, "task") if task else None
    last = _LAST_PATTERN.fullmatch(check_reference(reference))
    if last:
        owner = validate_id(newest_of, "task") if newest_of else resolve_task_id(task)
        return _newest(workspace, owner, int(last.group(1) or 0))
    found = workspace.find_run(reference, task_filter)
    if found is not None:
        return ResolvedRun(found[0], reference, found[1])
    where = f"task {task_filter}" if task_filter else "any task"
    listed = (
        f"under {workspace.display(workspace.runs_dir)}; list runs with: codex-orchestrator runs"
    )
    if len(reference) < MIN_PARTIAL:
        raise RunNotFoundError(
            f"unknown run {reference!r}: no run of {where} has this id {listed}; give a full "
            f"id, at least {MIN_PARTIAL} characters of one, or @last"
        )
    matches = [
        (task_id, run_id)
        for task_id, run_id in _run_ids(workspace, task_filter)
        if run_id.startswith(reference) or run_id.endswith(reference)
    ]
    if not matches:
        raise RunNotFoundError(
            f"unknown run {reference!r}: no run of {where} starts or ends with it {listed}"
        )
    if len(matches) > 1:
        matches.sort(key=lambda match: match[1], reverse=True)
        shown = ", ".join(f"{run_id} (task {task_id})" for task_id, run_id in matches[:MAX_LISTED])
        more = f" and {len(matches) - MAX_LISTED} more" if len(matches) > MAX_LISTED else ""
        raise UsageError(
            f"run {reference!r} is ambiguous: it fits {len(matches)} runs: {shown}{more}; "
            "give more characters of the one you mean"
        )
    task_id, run_id = matches[0]
    return ResolvedRun(task_id, run_id, workspace.run_dir(task_id, run_id))


def _newest(workspace: Workspace, task_id: str, back: int) -> ResolvedRun:
    """The task's newest run (``back`` = 0), or the one ``back`` runs before it."""
    runs = sorted(_task_run_ids(workspace, task_id), reverse=True)
    if back < len(runs):
        return ResolvedRun(task_id, runs[back], workspace.run_dir(task_id, runs[back]))
    if not runs:
        raise RunNotFoundError(
            f"task {task_id} has no runs under {workspace.display(workspace.runs_dir)}; start "
            f"one with: codex-orchestrator start --task {task_id} (or name another with --task)"
        )
    raise RunNotFoundError(
        f"{LAST}-{back}: task {task_id} has only {plural(len(runs), 'run')}; "
        f"the oldest is {LAST}-{len(runs) - 1}"
    )


def _run_ids(workspace: Workspace, task_id: str | None) -> list[tuple[str, str]]:
    tasks = [task_id] if task_id else _names(workspace.runs_dir)
    return [(task, run_id) for task in tasks for run_id in _task_run_ids(workspace, task)]


def _task_run_ids(workspace: Workspace, task_id: str) -> list[str]:
    """The run ids (directories named like one) of a task; none when it has no runs."""
    if not is_valid_id(task_id):
        return []
    return [
        name
        for name in _names(workspace.runs_dir / task_id / "cli")
        if RUN_ID_PATTERN.fullmatch(name)
    ]


def _names(directory: Path) -> list[str]:
    """The directories in ``directory`` (reached without following a link), sorted."""
    try:
        entries = scan_directory(directory)
    except OSError:
        return []
    return sorted(entry.name for entry in entries if entry.is_dir())
