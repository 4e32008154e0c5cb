"""``report RUN``: the self-contained HTML report of a run (the task page is `taskreport`).

A run report is built from the run directory alone (manifest, logs, error files) and written
next to the manifest as ``report.html``; links to logs and to child runs' reports are relative,
so the run directory can be copied or archived as a whole. Whatever is missing or unreadable
(a log, an error file, a child run) is named in the report instead of stopping it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codex_orchestrator.clock import parse_iso_utc
from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.ids import is_valid_id
from codex_orchestrator.jsonio import atomic_write_bytes
from codex_orchestrator.liveness import assess
from codex_orchestrator.manifest import EVENTS_NAME, MANIFEST_NAME, load_manifest
from codex_orchestrator.output import note
from codex_orchestrator.safefs import TEXT_SIZE_LIMIT, UnreadableFileError, read_regular
from codex_orchestrator.statuses import TERMINAL_RUN_STATUSES
from codex_orchestrator.view.attempts import history_from_events, shown_status, stage_attempts
from codex_orchestrator.view.logtail import read_tail, run_file, run_folder
from codex_orchestrator.view.page import (
    definition_list,
    document,
    esc,
    link,
    status_span,
    table,
)
from codex_orchestrator.view.rows import format_seconds
from codex_orchestrator.view.text import neutralise
from codex_orchestrator.view.timeline import PATTERNS, render_timeline

REPORT_NAME = "report.html"
LOG_LINES = 200
LOG_TAIL_BYTES = 256 * 1024
LOG_LINE_CHARS = 2000
ERROR_FILE_BYTES = 64 * 1024
MAX_CHILD_DEPTH = 8
#: Manifest keys (of an entry or of an ``attempt_history`` item) that name a log file.
LOG_KEYS = ("log_path", "stdout_log_path", "stderr_log_path")


class _Problems:
    """What the report could not show, listed at its top."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> str:
        self.items.append(text)
        return f'<p class="problem">{esc(text)}</p>'


def write_run_report(run_dir: Path, manifest: Mapping[str, Any], *, _depth: int = 0) -> Path:
    """Write ``<run>/report.html`` (and its child runs' reports) and return its path."""
    path = run_dir / REPORT_NAME
    html = _page(run_dir, manifest, _depth, write_children=True)
    atomic_write_bytes(path, html.encode("utf-8"))
    return path


def render_run_report(run_dir: Path, manifest: Mapping[str, Any]) -> str:
    """The run's report page, built in memory: nothing is written (its child runs' reports
    neither; the page links to them where they are). For readers that must not write, such
    as the read-only MCP server."""
    return _page(run_dir, manifest, 0, write_children=False)


def _page(run_dir: Path, manifest: Mapping[str, Any], depth: int, *, write_children: bool) -> str:
    problems = _Problems()
    stalled = _stalled(run_dir, manifest)
    if stalled:
        manifest = _interrupted(manifest)
    sections = [
        _timeline_section(run_dir, manifest, problems),
        _stages_section(manifest),
        _children_section(run_dir, manifest, problems, depth if write_children else None),
        _events_section(manifest),
        _errors_section(run_dir, manifest, problems),
        _logs_section(run_dir, manifest, problems),
    ]
    run_id = esc(manifest.get("run_id"))
    head = f"<h1>Run {run_id}</h1>" + _header(manifest)
    if stalled:
        head += problems.add(stalled)
    if problems.items:
        head += (
            "<h2>Missing or unreadable</h2><ul>"
            + "".join(f"<li>{esc(item)}</li>" for item in problems.items)
            + "</ul>"
        )
    return document(f"Run {manifest.get('run_id')}", head + "".join(sections))


def report_after_run(run_dir: Path) -> None:
    """Write a finished run's report (``settings.report``); a failure is a warning only."""
    try:
        write_run_report(run_dir, load_manifest(run_dir / MANIFEST_NAME))
    except Exception as error:  # the run's records are written: a report never fails the run
        note(f"warning: report for run {run_dir.name} not written ({error})")


def _stalled(run_dir: Path, manifest: Mapping[str, Any]) -> str:
    """Why an unfinished run is not progressing (stale heartbeat, dead orchestrator), or ""."""
    if manifest.get("status") in TERMINAL_RUN_STATUSES:
        return ""
    liveness = assess(run_dir, dict(manifest))
    if liveness.alive:
        return ""
    age = liveness.heartbeat_age_seconds
    beat = f"no heartbeat for {age:.0f}s" if age is not None else "no heartbeat recorded"
    return (
        f"This run is not progressing ({beat}"
        f"{', its orchestrator is gone' if liveness.orchestrator_gone else ''}): stages shown "
        f"as running were interrupted. Resume it: codex-orchestrator resume {manifest.get('run_id')}"
    )


def _interrupted(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest as it truly stands: its running stages marked ``interrupted``."""
    shown = dict(manifest)
    shown["commands"] = [
        dict(entry, status="interrupted")
        if isinstance(entry, dict) and entry.get("status") == "running"
        else entry
        for entry in _commands(manifest)
    ]
    return shown


def _duration(manifest: Mapping[str, Any]) -> str:
    start = parse_iso_utc(str(manifest.get("started_at") or ""))
    end = parse_iso_utc(str(manifest.get("completed_at") or ""))
    return format_seconds(end - start) if start is not None and end is not None else ""


def _header(manifest: Mapping[str, Any]) -> str:
    parent = manifest.get("parent_run_id")
    parent_html = (
        link(f"../{parent}/{REPORT_NAME}", str(parent))
        if isinstance(parent, str) and is_valid_id(parent)
        else esc(parent)
    )
    fields = [
        ("task", esc(manifest.get("task_id"))),
        (
            "pipeline",
            esc(f"{manifest.get('pipeline_id')} — {manifest.get('pipeline_title') or ''}"),
        ),
        ("status", status_span(manifest.get("status"))),
        ("detail", esc(manifest.get("status_detail") or "—")),
        ("started", esc(manifest.get("started_at"))),
        ("completed", esc(manifest.get("completed_at") or "not completed")),
        ("duration", esc(_duration(manifest) or "—")),
        ("host", esc(manifest.get("host") or "unknown")),
        ("executor", esc(manifest.get("executor") or "local")),
        ("summary", esc(manifest.get("summary") or "—")),
        ("manifest", link(MANIFEST_NAME, MANIFEST_NAME)),
    ]
    if parent:
        fields.insert(2, ("parent run", parent_html))
    return definition_list(fields)


def _commands(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    commands = manifest.get("commands")
    return (
        [entry for entry in commands if isinstance(entry, dict)]
        if isinstance(commands, list)
        else []
    )


def _events(run_dir: Path, problems: _Problems) -> dict[int, list[dict[str, Any]]]:
    try:
        raw = read_regular(run_dir / EVENTS_NAME, TEXT_SIZE_LIMIT)
    except FileNotFoundError:
        problems.add(f"{EVENTS_NAME} is missing: earlier attempts of re-run stages are not shown")
        return {}
    except UnreadableFileError as error:
        problems.add(
            f"{EVENTS_NAME} cannot be read ({error.reason}): earlier attempts are not shown"
        )
        return {}
    return history_from_events(raw.splitlines())


def _timeline_section(run_dir: Path, manifest: Mapping[str, Any], problems: _Problems) -> str:
    now = time.time()
    origin = parse_iso_utc(str(manifest.get("started_at") or "")) or now
    finish = (
        parse_iso_utc(str(manifest.get("completed_at") or ""))
        or parse_iso_utc(str(manifest.get("updated_at") or ""))
        or origin
    )
    attempts = stage_attempts(manifest, finish, _events(run_dir, problems))
    stages = [(int(entry.get("index") or 0), str(entry.get("id"))) for entry in _commands(manifest)]
    legend = (
        '<p class="legend">'
        + "".join(
            f'<span><svg width="28" height="12"><rect width="28" height="12" fill="url(#{pattern})" '
            f'stroke="#212121" stroke-width="0.6"/></svg> {esc(label)}: {esc(status)}</span>'
            for status, (pattern, label) in PATTERNS.items()
        )
        + "</p>"
    )
    svg = render_timeline(stages, attempts, origin, finish)
    return f"<h2>Timeline</h2>{svg}{legend}"


def _stages_section(manifest: Mapping[str, Any]) -> str:
    rows = []
    for entry in _commands(manifest):
        duration = entry.get("duration_seconds")
        if not isinstance(duration, int | float) or isinstance(duration, bool):
            start = parse_iso_utc(str(entry.get("started_at") or ""))
            end = parse_iso_utc(str(entry.get("completed_at") or ""))
            duration = end - start if start is not None and end is not None else None
        attempts = entry.get("attempts")
        rows.append(
            [
                esc(entry.get("index")),
                f'<a href="#stage-{esc(entry.get("index"))}">{esc(entry.get("id"))}</a>',
                status_span(shown_status(entry)),
                esc(attempts if attempts is not None else (1 if entry.get("started_at") else 0)),
                esc(format_seconds(duration)),
                esc(entry.get("exit_code")),
                esc(entry.get("summary")),
            ]
        )
    headers = ("#", "stage", "status", "attempts", "duration", "exit code", "summary")
    return "<h2>Stages</h2>" + table(headers, rows, numeric=(0, 3, 4, 5))


def _error_block(path: Path, entry: Mapping[str, Any], problems: _Problems) -> str:
    shown = f"errors/{path.name}"
    title = f"<h3>{esc(entry.get('id'))}: {link(shown, shown)}</h3>"
    if entry.get("error_file") is None or not str(entry["error_file"]).endswith(path.name):
        title += '<p class="muted">Not the current attempt\'s: an earlier attempt wrote it.</p>'
    try:
        data, size = read_tail(path, ERROR_FILE_BYTES)
        if size > ERROR_FILE_BYTES:
            raise ValueError(f"{size} bytes, over the {ERROR_FILE_BYTES}-byte limit")
        body = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except FileNotFoundError:
        return title + problems.add(f"error file {shown} of stage {entry.get('id')} is missing")
    except (UnreadableFileError, ValueError) as error:
        return title + problems.add(
            f"error file {shown} of stage {entry.get('id')} is unreadable or corrupt ({error})"
        )
    return title + f"<pre>{esc(neutralise(body))}</pre>"


def _errors_section(run_dir: Path, manifest: Mapping[str, Any], problems: _Problems) -> str:
    recorded = any(entry.get("error_file") for entry in _commands(manifest))
    if recorded and run_folder(run_dir, "errors") is None:
        problems.add(
            "errors/ is missing or not a directory (links are not followed): no error file is shown"
        )
    parts = [
        _error_block(path, entry, problems)
        for entry in _commands(manifest)
        for path in _stage_files(run_dir, "errors", entry, ("error_file",))
    ]
    return "<h2>Error files</h2>" + (
        "".join(parts) or '<p class="muted">No stage wrote an error file.</p>'
    )


def _stage_files(
    run_dir: Path, folder: str, entry: Mapping[str, Any], keys: tuple[str, ...]
) -> list[Path]:
    """A stage's files in ``<run>/<folder>``: those the manifest names, then the rest on disk.

    Files on disk count when named ``NN-<stage-id>.*`` (every attempt's logs, the error file
    of an attempt a later one replaced in the manifest).
    """
    named = [run_file(run_dir, folder, entry.get(key)) for key in keys]
    history = entry.get("attempt_history")
    for item in history if isinstance(history, list) else []:
        if isinstance(item, dict):
            named += [run_file(run_dir, folder, item.get(key)) for key in keys]
    paths = [path for path in named if path is not None]
    index, stage_id = entry.get("index"), entry.get("id")
    base = run_folder(run_dir, folder)
    if base and isinstance(index, int) and isinstance(stage_id, str) and is_valid_id(stage_id):
        try:
            on_disk = sorted(base.glob(f"*{index}-{stage_id}.*"))
        except OSError:
            on_disk = []
        paths += [p for p in on_disk if p.name.split("-", 1)[0].lstrip("0") == str(index)]
    unique: dict[str, Path] = {}
    for path in paths:
        unique.setdefault(path.name, path)
    return list(unique.values())


def _log_block(path: Path, stage_id: object, problems: _Problems) -> str:
    shown = f"commands/{path.name}"
    title = f"<h3>{link(shown, shown)}</h3>"
    try:
        data, size = read_tail(path, LOG_TAIL_BYTES)
    except FileNotFoundError:
        return title + problems.add(f"log {shown} of stage {stage_id} is missing")
    except UnreadableFileError as error:
        return title + problems.add(
            f"log {shown} of stage {stage_id} cannot be read ({error.reason})"
        )
    lines = data.decode("utf-8", errors="replace").split("\n")
    if size > len(data):
        lines = lines[1:]  # the first line read is cut
    if lines and lines[-1] == "":
        lines.pop()
    shown_lines = [
        line if len(line) <= LOG_LINE_CHARS else line[:LOG_LINE_CHARS] + " … (line cut)"
        for line in lines[-LOG_LINES:]
    ]
    note_text = f"{size} bytes; last {len(shown_lines)} lines" if size else "empty"
    body = esc(neutralise("\n".join(shown_lines))) if shown_lines else ""
    return f'{title}<p class="muted">{esc(note_text)}</p>' + (f"<pre>{body}</pre>" if body else "")


def _logs_section(run_dir: Path, manifest: Mapping[str, Any], problems: _Problems) -> str:
    parts = []
    if run_folder(run_dir, "commands") is None:
        parts.append(
            problems.add(
                "commands/ is missing or not a directory (links are not followed): no log is shown"
            )
        )
    for entry in _commands(manifest):
        if entry.get("kind") == "subpipeline":
            continue
        anchor = f'<h3 id="stage-{esc(entry.get("index"))}">Stage {esc(entry.get("id"))}</h3>'
        files = _stage_files(run_dir, "commands", entry, LOG_KEYS)
        if not files:
            text = (
                "no log: the stage did not run"
                if not entry.get("started_at")
                else "no log recorded"
            )
            parts.append(anchor + f'<p class="muted">{esc(text)}</p>')
            continue
        parts.append(
            anchor + "".join(_log_block(path, entry.get("id"), problems) for path in files)
        )
    return f"<h2>Logs (last {LOG_LINES} lines)</h2>" + "".join(parts)


def _children_section(
    run_dir: Path, manifest: Mapping[str, Any], problems: _Problems, depth: int | None
) -> str:
    """The child runs, each linked to its report; their reports are written too unless
    ``depth`` is None (a page built in memory)."""
    links = manifest.get("child_runs")
    children = (
        [child for child in links if isinstance(child, dict)] if isinstance(links, list) else []
    )
    if not children:
        return ""
    rows = []
    for child in children:
        child_id = child.get("run_id")
        cell = esc(child_id)
        if not (isinstance(child_id, str) and is_valid_id(child_id)):
            cell += problems.add(f"child run entry with an invalid run id {child_id!r}")
        elif depth is None:
            cell = link(f"../{child_id}/{REPORT_NAME}", child_id)
        else:
            child_dir = run_dir.parent / child_id
            try:
                if depth >= MAX_CHILD_DEPTH:
                    raise ValueError(f"nested more than {MAX_CHILD_DEPTH} levels deep")
                write_run_report(
                    child_dir, load_manifest(child_dir / MANIFEST_NAME), _depth=depth + 1
                )
                cell = link(f"../{child_id}/{REPORT_NAME}", child_id)
            except (OrchestratorError, OSError, ValueError) as error:
                cell += problems.add(f"child run {child_id}: no report ({error})")
        rows.append(
            [
                cell,
                esc(child.get("pipeline_id")),
                esc(child.get("stage_id")),
                status_span(child.get("status")),
            ]
        )
    return "<h2>Child runs</h2>" + table(("run", "pipeline", "stage", "status"), rows)


def _event_table(events: object) -> str:
    items = (
        [event for event in events if isinstance(event, dict)] if isinstance(events, list) else []
    )
    if not items:
        return '<p class="muted">None.</p>'
    keys: list[str] = []
    for item in items:
        keys += [str(key) for key in item if str(key) not in keys]
    rows = [[esc(neutralise(_plain(item.get(key)))) for key in keys] for item in items]
    return table(keys, rows)


def _plain(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _events_section(manifest: Mapping[str, Any]) -> str:
    return (
        "<h2>Resume events</h2>"
        + _event_table(manifest.get("resume_events"))
        + "<h2>Cancel events</h2>"
        + _event_table(manifest.get("cancel_events"))
    )
