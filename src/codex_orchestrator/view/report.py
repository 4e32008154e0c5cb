"""``report RUN``: the self-contained HTML report of a run (the task page is `taskreport`).

A run report is built from the run directory alone (manifest, logs, error files) and written
next to the manifest as ``report.html`` (`write_run_report`), or built in memory without
writing anything (`render_run_report`); links to logs and to child runs' reports are relative,
so the run directory can be copied or archived as a whole. Whatever is missing or unreadable
(a log, an error file, a child run) is named in the report instead of stopping it.

Bounded and linear (``docs/report.md``): each log shows its last ``LOG_LINES`` lines within its
last ``LOG_TAIL_BYTES``, lines cut at ``LOG_LINE_CHARS``; the log tails and error files of a page
share ``TEXT_BUDGET_BYTES`` of HTML (past it, a file is linked, not shown); a text field from the
manifest is cut at ``FIELD_CHARS``. Each folder of the run is listed once (`StageFiles`), so the
page costs the same per stage however many stages the run has.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.records.cache_field import cache_text
from codex_orchestrator.records.liveness import assess
from codex_orchestrator.records.manifest import MAX_CHILD_DEPTH, load_manifest
from codex_orchestrator.records.run_layout import (
    COMMANDS_DIR_NAME,
    ERRORS_DIR_NAME,
    EVENTS_NAME,
    MANIFEST_NAME,
    REPORT_NAME,
    RunLayout,
)
from codex_orchestrator.records.stage_logs import StageFiles
from codex_orchestrator.records.statuses import TERMINAL_RUN_STATUSES
from codex_orchestrator.util.clock import parse_iso_utc
from codex_orchestrator.util.console import note
from codex_orchestrator.util.ids import is_valid_id
from codex_orchestrator.util.jsonio import (
    array_objects,
    atomic_write_bytes,
    encode_record,
    valid_text,
)
from codex_orchestrator.util.safefs import TEXT_SIZE_LIMIT, UnreadableFileError, read_regular
from codex_orchestrator.util.terminal_text import neutralise
from codex_orchestrator.view.attempts import history_from_events, shown_status, stage_attempts
from codex_orchestrator.view.logtail import read_error_file, read_tail, run_file, run_folder
from codex_orchestrator.view.page import (
    definition_list,
    document,
    esc,
    link,
    status_span,
    table,
)
from codex_orchestrator.view.rows import format_seconds
from codex_orchestrator.view.timeline import PATTERNS, render_timeline

LOG_LINES = 200
#: The most read from the end of one log: its last 200 lines, or fewer when they are longer.
LOG_TAIL_BYTES = 32 * 1024
LOG_LINE_CHARS = 2000
#: HTML that the log tails, and the error files, of one page may take (past it, files are
#: linked, not shown): 4 MiB in all, so that a page stays readable in a browser.
LOG_BUDGET_BYTES = 3 * 1024 * 1024
ERROR_BUDGET_BYTES = 1024 * 1024
TEXT_BUDGET_BYTES = LOG_BUDGET_BYTES + ERROR_BUDGET_BYTES
#: A text field of the manifest (summary, event reason, ...) is shown up to this many characters.
FIELD_CHARS = 1000
#: Manifest keys (of an entry or of an ``attempt_history`` item) that name a log file.
LOG_KEYS = ("log_path", "stdout_log_path", "stderr_log_path")


class _Problems:
    """What the report could not show, listed at its top."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> str:
        self.items.append(text)
        return f'<p class="problem">{esc(text)}</p>'


class _Budget:
    """The HTML left on this page for log tails (or for error files)."""

    def __init__(self, size: int) -> None:
        self.size = self.left = size
        self.withheld = 0

    def fits(self, html: str) -> bool:
        """Take ``html``'s size from the budget when it fits; count a withheld file when not."""
        size = len(html.encode("utf-8", "surrogatepass"))
        if size > self.left:
            self.withheld += 1
            return False
        self.left -= size
        return True

    def withheld_note(self, shown: str) -> str:
        return (
            f'<p class="muted">{esc(shown)} not shown: this page already holds its '
            f"{_mib(self.size)} of {'log' if shown.startswith('commands/') else 'error'} text; "
            "open the file.</p>"
        )


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


class _Page(NamedTuple):
    """What the sections of one page share."""

    run_dir: Path
    problems: _Problems
    log_budget: _Budget
    error_budget: _Budget
    logs: StageFiles | None  # None: ``commands`` is missing or not a directory
    errors: StageFiles | None


def render_run_report(run_dir: Path, manifest: Mapping[str, Any] | None = None) -> str:
    """The report page of the run in ``run_dir``, built in memory: nothing is written, not even
    child runs' reports (the page links to them). ``manifest`` defaults to the run's own
    (`CorruptManifestError`, exit 2, when it cannot be read). The text is valid Unicode."""
    if manifest is None:
        manifest = load_manifest(RunLayout(run_dir).manifest)
    return _render(run_dir, manifest, None)


def write_run_report(run_dir: Path, manifest: Mapping[str, Any], *, _depth: int = 0) -> Path:
    """Write ``<run>/report.html`` (and its child runs' reports) and return its path.

    The file is written in the run directory reached without following a link: a run or child
    directory linked elsewhere is refused, never written through.
    """
    path = RunLayout(run_dir).report
    atomic_write_bytes(path, encode_record(_render(run_dir, manifest, _depth)))
    return path


def _render(run_dir: Path, manifest: Mapping[str, Any], depth: int | None) -> str:
    """The page; child reports are written too unless ``depth`` is None (in memory)."""
    page = _Page(
        run_dir,
        _Problems(),
        _Budget(LOG_BUDGET_BYTES),
        _Budget(ERROR_BUDGET_BYTES),
        StageFiles.listing(RunLayout(run_dir).commands_dir)
        if run_folder(run_dir, COMMANDS_DIR_NAME)
        else None,
        StageFiles.listing(RunLayout(run_dir).errors_dir)
        if run_folder(run_dir, ERRORS_DIR_NAME)
        else None,
    )
    problems = page.problems
    stalled = _stalled(run_dir, manifest)
    if stalled:
        manifest = _interrupted(manifest)
    sections = [
        _timeline_section(run_dir, manifest, problems),
        _stages_section(manifest),
        _children_section(run_dir, manifest, problems, depth),
        _events_section(manifest),
        _errors_section(page, manifest),
        _logs_section(page, manifest),
    ]
    run_id = esc(manifest.get("run_id"))
    head = f"<h1>Run {run_id}</h1>" + _header(manifest)
    if stalled:
        head += problems.add(stalled)
    for budget, kind in ((page.error_budget, "error"), (page.log_budget, "log")):
        if budget.withheld:
            problems.add(
                f"{budget.withheld} {kind} files are linked but not shown: a page shows at most "
                f"{_mib(budget.size)} of {kind} text"
            )
    if problems.items:
        head += (
            "<h2>Missing or unreadable</h2><ul>"
            + "".join(f"<li>{esc(item)}</li>" for item in problems.items)
            + "</ul>"
        )
    # Records written by older versions may hold lone surrogates (an undecodable $USER).
    return valid_text(document(f"Run {manifest.get('run_id')}", head + "".join(sections)))


def report_after_run(run_dir: Path) -> None:
    """Write a finished run's report (``settings.report``); a failure is a warning only."""
    try:
        write_run_report(run_dir, load_manifest(RunLayout(run_dir).manifest))
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
        ("detail", esc(_cut(manifest.get("status_detail")) or "—")),
        ("started", esc(manifest.get("started_at"))),
        ("completed", esc(manifest.get("completed_at") or "not completed")),
        ("duration", esc(_duration(manifest) or "—")),
        ("host", esc(manifest.get("host") or "unknown")),
        ("executor", esc(manifest.get("executor") or "local")),
        ("summary", esc(_cut(manifest.get("summary")) or "—")),
        ("manifest", link(MANIFEST_NAME, MANIFEST_NAME)),
    ]
    if parent:
        fields.insert(2, ("parent run", parent_html))
    return definition_list(fields)


def _commands(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    return array_objects(manifest.get("commands"))


def _events(run_dir: Path, problems: _Problems) -> dict[int, list[dict[str, Any]]]:
    try:
        raw = read_regular(RunLayout(run_dir).events, TEXT_SIZE_LIMIT, follow_links=False)
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
                esc(_cut(entry.get("exit_code"))),
                _command_cell(entry),
                esc(_cut(entry.get("summary"))),
                esc(cache_text(entry)),
            ]
        )
    headers = (
        "#",
        "stage",
        "status",
        "attempts",
        "duration",
        "exit code",
        "command",
        "summary",
        "cache",
    )
    return "<h2>Stages</h2>" + table(headers, rows, numeric=(0, 3, 4, 5))


def _command_cell(entry: Mapping[str, Any]) -> str:
    """The stage's shell command (a sub-pipeline: the child pipeline it ran)."""
    command = entry.get("command")
    if isinstance(command, str) and command:
        return f"<code>{esc(neutralise(str(_cut(command))))}</code>"
    return esc("sub-pipeline" if entry.get("kind") == "subpipeline" else "—")


def _cut(value: object) -> object:
    """A manifest value as shown in a table: text longer than `FIELD_CHARS` is cut."""
    if isinstance(value, str) and len(value) > FIELD_CHARS:
        return value[:FIELD_CHARS] + " … (cut)"
    return value


def _error_block(path: Path, entry: Mapping[str, Any], page: _Page) -> str:
    problems = page.problems
    shown = f"errors/{path.name}"
    title = f"<h3>{esc(entry.get('id'))}: {link(shown, shown)}</h3>"
    if entry.get("error_file") is None or not str(entry["error_file"]).endswith(path.name):
        title += '<p class="muted">Not the current attempt\'s: an earlier attempt wrote it.</p>'
    try:
        document = read_error_file(path)
    except FileNotFoundError:
        return title + problems.add(f"error file {shown} of stage {entry.get('id')} is missing")
    except (UnreadableFileError, ValueError) as error:
        return title + problems.add(
            f"error file {shown} of stage {entry.get('id')} is unreadable or corrupt ({error})"
        )
    block = _readable_error_file(document)
    budget = page.error_budget
    return title + (block if budget.fits(block) else budget.withheld_note(shown))


#: Error-file texts shown as the lines they hold rather than as JSON strings of escapes.
_TEXT_FIELDS = (("details", "stdout"), ("details", "stderr"), ("command",))


def _readable_error_file(document: object) -> str:
    """An error file as HTML: its JSON (indented) with every multi-line text (the output
    tails, a long command) taken out and shown below it as the lines it holds, in order, so
    that a failure reads as it was printed rather than as one line of ``\\n`` escapes."""
    texts: list[tuple[str, str]] = []
    if isinstance(document, dict):
        document = json.loads(json.dumps(document))  # a copy to take the texts out of
        for path in _TEXT_FIELDS:
            holder: Any = document
            for key in path[:-1]:
                holder = holder.get(key) if isinstance(holder, dict) else None
            value = holder.get(path[-1]) if isinstance(holder, dict) else None
            if isinstance(value, str) and "\n" in value.rstrip("\n"):
                name = ".".join(path)
                holder[path[-1]] = f"<{len(value.splitlines())} lines, shown below as {name}>"
                texts.append((name, value))
    body = json.dumps(document, indent=2, ensure_ascii=False)
    html = f"<pre>{esc(neutralise(body))}</pre>"
    for name, value in texts:
        html += f'<p class="muted">{esc(name)}:</p><pre>{esc(neutralise(value))}</pre>'
    return html


def _errors_section(page: _Page, manifest: Mapping[str, Any]) -> str:
    recorded = any(entry.get("error_file") for entry in _commands(manifest))
    if recorded and page.errors is None:
        page.problems.add(
            "errors/ is missing or not a directory (links are not followed): no error file is shown"
        )
    parts = [
        _error_block(path, entry, page)
        for entry in _commands(manifest)
        for path in _stage_files(page, page.errors, ERRORS_DIR_NAME, entry, ("error_file",))
    ]
    return "<h2>Error files</h2>" + (
        "".join(parts) or '<p class="muted">No stage wrote an error file.</p>'
    )


def _stage_files(
    page: _Page,
    files: StageFiles | None,
    folder: str,
    entry: Mapping[str, Any],
    keys: tuple[str, ...],
) -> list[Path]:
    """A stage's files in ``<run>/<folder>``: those the manifest names, then the rest on disk.

    Files on disk count when named ``NN-<stage-id>.*`` (every attempt's logs, the error file
    of an attempt a later one replaced in the manifest); ``files`` is the folder's index.
    """
    if files is None:
        return []
    named = [run_file(page.run_dir, folder, entry.get(key)) for key in keys]
    for item in array_objects(entry.get("attempt_history")):
        named += [run_file(page.run_dir, folder, item.get(key)) for key in keys]
    paths = [path for path in named if path is not None]
    paths += [files.folder / name for name in files.of(entry.get("index"), entry.get("id"))]
    unique: dict[str, Path] = {}
    for path in paths:
        unique.setdefault(path.name, path)
    return list(unique.values())


def _log_block(path: Path, stage_id: object, page: _Page) -> str:
    problems = page.problems
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
        lines[0] = "(line cut) … " + lines[0]  # the tail read starts inside it
    if lines and lines[-1] == "":
        lines.pop()
    shown_lines = [
        line if len(line) <= LOG_LINE_CHARS else line[:LOG_LINE_CHARS] + " … (line cut)"
        for line in lines[-LOG_LINES:]
    ]
    note_text = f"{size} bytes; last {len(shown_lines)} lines" if size else "empty"
    body = esc(neutralise("\n".join(shown_lines))) if shown_lines else ""
    # The box opens scrolled to its end, where a failure is, without a script: a column laid
    # out in reverse starts at its bottom.
    block = f'<div class="tail"><pre>{body}</pre></div>' if body else ""
    if block and not page.log_budget.fits(block):
        block = page.log_budget.withheld_note(shown)
    return f'{title}<p class="muted">{esc(note_text)}</p>' + block


def _logs_section(page: _Page, manifest: Mapping[str, Any]) -> str:
    parts = []
    if page.logs is None:
        parts.append(
            page.problems.add(
                "commands/ is missing or not a directory (links are not followed): no log is shown"
            )
        )
    for entry in _commands(manifest):
        if entry.get("kind") == "subpipeline":
            continue
        anchor = f'<h3 id="stage-{esc(entry.get("index"))}">Stage {esc(entry.get("id"))}</h3>'
        files = _stage_files(page, page.logs, COMMANDS_DIR_NAME, entry, LOG_KEYS)
        if not files:
            text = (
                "no log: the stage did not run"
                if not entry.get("started_at")
                else "no log recorded"
            )
            parts.append(anchor + f'<p class="muted">{esc(text)}</p>')
            continue
        parts.append(anchor + "".join(_log_block(path, entry.get("id"), page) for path in files))
    return f"<h2>Logs (last {LOG_LINES} lines)</h2>" + "".join(parts)


def _children_section(
    run_dir: Path, manifest: Mapping[str, Any], problems: _Problems, depth: int | None
) -> str:
    children = array_objects(manifest.get("child_runs"))
    if not children:
        return ""
    rows = []
    for child in children:
        child_id = child.get("run_id")
        cell = esc(child_id)
        if isinstance(child_id, str) and is_valid_id(child_id):
            child_dir = run_dir.parent / child_id
            try:
                if depth is not None:  # in memory (None), child reports are linked, not written
                    if depth >= MAX_CHILD_DEPTH:
                        raise ValueError(f"nested more than {MAX_CHILD_DEPTH} levels deep")
                    write_run_report(
                        child_dir, load_manifest(RunLayout(child_dir).manifest), _depth=depth + 1
                    )
                cell = link(f"../{child_id}/{REPORT_NAME}", child_id)
            except (OrchestratorError, OSError, ValueError) as error:
                cell += problems.add(f"child run {child_id}: no report ({error})")
        else:
            cell += problems.add(f"child run entry with an invalid run id {child_id!r}")
        rows.append(
            [
                cell,
                esc(_cut(child.get("pipeline_id"))),
                esc(_cut(child.get("stage_id"))),
                status_span(child.get("status")),
            ]
        )
    return "<h2>Child runs</h2>" + table(("run", "pipeline", "stage", "status"), rows)


def _event_table(events: object) -> str:
    items = array_objects(events)
    if not items:
        return '<p class="muted">None.</p>'
    keys: dict[str, None] = {}
    for item in items:
        keys.update(dict.fromkeys(map(str, item)))
    rows = [[esc(neutralise(str(_cut(_plain(item.get(key)))))) for key in keys] for item in items]
    return table([str(_cut(key)) for key in keys], rows)


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
