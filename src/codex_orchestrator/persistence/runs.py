"""Every run of a task, newest first, from its history files and its live manifests.

A task's finished runs are listed in ``<out>/<task>/state.json`` (newest 1,000 or so), in
``state.archive.ndjson`` (older ones) and, until merged, in ``state.pending/``. Runs that are
not recorded yet (in progress, or killed before recording) are the directories of
``<runs>/<task>/cli/`` missing from the history; only their manifests are read. So listing
100 tasks of 1,000 runs reads 100 small histories, not 100,000 manifests (see
``docs/run-control.md``).

Order is by run id (start time), newest first. The archive is read only when the listing
reaches a run that started before the oldest completion in ``state.json``: every archived
run completed (so started) before that moment, so nothing newer can hide in the archive.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from codex_orchestrator.persistence.state_format import (
    Entry,
    TaskStateFiles,
    TaskStateReader,
    keep_newer,
)
from codex_orchestrator.records.layout import PENDING_DIR_NAME
from codex_orchestrator.records.manifest import manifest_problem
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.statuses import TERMINAL_RUN_STATUSES, RunStatus
from codex_orchestrator.util.clock import parse_iso_utc
from codex_orchestrator.util.ids import RUN_ID_PATTERN, is_valid_id
from codex_orchestrator.util.jsonio import json_text
from codex_orchestrator.util.safefs import UnreadableFileError, read_regular, scan_directory

if TYPE_CHECKING:
    from codex_orchestrator.records.workspace import Workspace

MANIFEST_SIZE_LIMIT = 64 * 1024 * 1024
_RECHECKED = frozenset({RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SKIPPED})

Warn = Callable[[str], None]
_PLAIN = re.compile(r"[A-Za-z0-9_.:/ +-]*")
#: `RunRow.json_line` of a finished run; ``%r`` of a float is its JSON form.
_LINE = (
    '{"run_id":"%s","task_id":"%s","pipeline_id":"%s","status":"%s","started_at":"%s",'
    '"completed_at":"%s","duration_seconds":%r,"failed_stage":%s,"stale":%s,"pruned":%s,'
    '"manifest":%s}'
)


class RunRow(NamedTuple):
    """One run as ``runs`` lists it."""

    run_id: str
    task_id: str
    pipeline_id: str
    status: str
    started_at: str | None
    completed_at: str | None
    duration_seconds: float | None
    failed_stage: str | None
    stale: bool
    pruned: bool
    manifest: str | None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this run (``runs --format json``)."""
        return self._asdict()

    def json_line(self) -> str:
        """`to_json` encoded compactly on one line (``runs --format ndjson``).

        A finished run whose strings need no escaping (nearly all: ids, times, relative paths)
        is formatted by one ``%`` of a template, several times faster than the JSON encoder.
        """
        run_id, task_id, pipeline, status, started, completed, duration, failed, stale = self[:9]
        pruned, manifest = self[9:]
        if (
            started is None
            or completed is None
            or duration is None
            or not _PLAIN.fullmatch(
                f"{pipeline}{status}{started}{completed}{failed or ''}{manifest or ''}"
            )
        ):
            return json_text(self.to_json(), pretty=False)
        return _LINE % (
            run_id,
            task_id,
            pipeline,
            status,
            started,
            completed,
            duration,
            f'"{failed}"' if failed is not None else "null",
            "true" if stale else "false",
            "true" if pruned else "false",
            f'"{manifest}"' if manifest is not None else "null",
        )


def started_at_of(run_id: str) -> str:
    """The start time a run id encodes, as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    return f"{run_id[:10]}T{run_id[11:13]}:{run_id[14:16]}:{run_id[17:19]}.{run_id[20:23]}Z"


def task_ids(runs_dir: Path, out_dir: Path) -> list[str]:
    """Tasks that have run directories or a history."""
    found: set[str] = set()
    for directory in (runs_dir, out_dir):
        try:
            with os.scandir(directory) as entries:
                found.update(
                    entry.name
                    for entry in entries
                    if is_valid_id(entry.name) and entry.is_dir(follow_symlinks=False)
                )
        except OSError:
            continue
    return sorted(found)


def failed_stage_of(detail: Any) -> str | None:
    """The stage named by a ``stage:<id>:<kind>`` status detail."""
    if isinstance(detail, str) and detail.startswith("stage:"):
        return detail.split(":")[1] or None
    return None


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """A run's manifest, or None when missing, unreadable or not a valid manifest."""
    try:
        data = json.loads(
            read_regular(RunLayout(run_dir).manifest, MANIFEST_SIZE_LIMIT, follow_links=False)
        )
    except (OSError, UnreadableFileError, ValueError, RecursionError):
        return None
    return data if manifest_problem(data) is None else None


class TaskHistory:
    """The runs of one task (see the module docstring).

    Its directories are resolved like every record directory (`Workspace.cli_dir`): a link
    that leads out of its root is refused (exit 2), as ``status`` refuses it.
    """

    def __init__(self, workspace: Workspace, task_id: str, warn: Warn) -> None:
        self.task_id = task_id
        self.cli_dir = workspace.cli_dir(task_id)
        files = TaskStateFiles(workspace.state_dir(task_id), self.cli_dir.parent / PENDING_DIR_NAME)
        self.state = TaskStateReader(files, warn, workspace.display)
        self._display = workspace.display
        self._warn = warn

    def run_dir(self, run_id: str) -> Path:
        """``<runs>/<task>/cli/<run-id>``."""
        return self.cli_dir / run_id

    def on_disk(self) -> set[str]:
        """Run ids that have a directory (links are not followed: they could lead out of the
        runs root, and ``prune`` deletes what it finds here)."""
        try:
            entries = scan_directory(self.cli_dir)
        except FileNotFoundError:
            return set()
        except OSError as error:
            self._warn(f"warning: {self._display(self.cli_dir)}: {error.strerror}; skipped")
            return set()
        return {
            entry.name
            for entry in entries
            if RUN_ID_PATTERN.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        }

    def recorded(self) -> tuple[dict[str, Entry], str | None]:
        """Entries of ``state.json`` and pending snapshots by run id, and the oldest completion
        in ``state.json`` (None when it holds no run)."""
        entries = {entry["runId"]: entry for entry in self.state.recent()}
        oldest = min((entry["timestamp"] for entry in entries.values()), default=None)
        for entry in self.state.pending():
            keep_newer(entries, entry)
        return entries, oldest

    def archived(self) -> dict[str, Entry]:
        """Entries of ``state.archive.ndjson`` by run id (the newest of a run)."""
        return self.state.archived()

    def newest_first(self, since: str | None = None) -> Iterator[RunRow]:
        """Every run of the task, newest first; stops before runs started before ``since``."""
        entries, oldest = self.recorded()
        disk = self.on_disk()
        ids = sorted(disk | entries.keys())
        archive_loaded = False
        row_of, in_entries = self._row, entries.get
        while ids:
            run_id = ids.pop()
            if since is not None or not archive_loaded:
                started = started_at_of(run_id)
                if since is not None and started < since:
                    return
                if not archive_loaded and (oldest is None or started <= oldest):
                    archive_loaded = True
                    added = [item for item in self.archived().items() if item[0] not in entries]
                    if added:
                        entries.update(added)
                        ids = sorted({*ids, run_id, *(run for run, _ in added)})
                        continue
            row = row_of(run_id, in_entries(run_id), run_id in disk)
            if row is not None:
                yield row

    def _row(self, run_id: str, entry: Entry | None, on_disk: bool) -> RunRow | None:
        if entry is None:
            return self._manifest_row(run_id)
        status = entry["status"]
        if on_disk and status in _RECHECKED and self._resumed_since(run_id, entry):
            return self._manifest_row(run_id)
        started = entry.get("startedAt")
        if type(started) is not str:
            started = started_at_of(run_id)
        completed: str = entry["timestamp"]
        duration = entry.get("durationSeconds")
        detail = entry.get("statusDetail")
        failed = failed_stage_of(detail) if detail else None
        if detail is None and status == RunStatus.FAILED and on_disk:
            manifest = read_manifest(self.run_dir(run_id))  # recorded before statusDetail existed
            failed = _first_failed(manifest) if manifest else None
        pruned = entry.get("pruned") is True
        return RunRow(
            run_id,
            self.task_id,
            entry["pipelineId"],
            status,
            started,
            completed,
            duration
            if type(duration) is float and math.isfinite(duration)  # Infinity in a tampered entry
            else duration_between(started, completed),
            failed,
            False,
            pruned,
            None if pruned else entry["manifest"],
        )

    def _resumed_since(self, run_id: str, entry: Entry) -> bool:
        """True when a failed or cancelled run's heartbeat ticked after it was recorded."""
        try:
            beat = os.lstat(RunLayout(self.run_dir(run_id)).heartbeat).st_mtime
        except OSError:
            return False
        recorded = parse_iso_utc(entry["timestamp"])
        return recorded is not None and beat > recorded + 1.0

    def _manifest_row(self, run_id: str) -> RunRow | None:
        from codex_orchestrator.records.liveness import assess

        run_dir = self.run_dir(run_id)
        manifest = read_manifest(run_dir)
        if manifest is None:
            self._warn(
                f"warning: run {run_id} of task {self.task_id}: no readable manifest in "
                f"{self._display(run_dir)}; not listed"
            )
            return None
        liveness = assess(run_dir, manifest)
        started = manifest.get("started_at")
        completed = manifest.get("completed_at")
        started = started if isinstance(started, str) else started_at_of(run_id)
        completed = completed if isinstance(completed, str) else None
        unfinished = manifest["status"] not in TERMINAL_RUN_STATUSES
        return RunRow(
            run_id=run_id,
            task_id=self.task_id,
            pipeline_id=manifest["pipeline_id"],
            status=manifest["status"],
            started_at=started,
            completed_at=completed,
            duration_seconds=duration_between(started, completed) if completed else None,
            failed_stage=_first_failed(manifest),
            stale=unfinished and (liveness.stale or liveness.orchestrator_gone),
            pruned=False,
            manifest=self._display(RunLayout(run_dir).manifest),
        )


def all_runs(
    histories: Iterable[TaskHistory], since: str | None = None, *, lazy: bool = True
) -> Iterator[RunRow]:
    """The runs of every task in ``histories``, newest first.

    ``lazy``: a k-way merge that reads no further than the caller consumes (for a limit);
    otherwise every run is collected and sorted at once, which is faster for all of them.
    """
    if lazy:
        return heapq.merge(
            *(history.newest_first(since) for history in histories),
            key=itemgetter(0),
            reverse=True,
        )
    rows = [row for history in histories for row in history.newest_first(since)]
    rows.sort(key=itemgetter(0), reverse=True)
    return iter(rows)


def duration_between(started: str | None, completed: str | None) -> float | None:
    """Seconds between two ISO-8601 UTC times (None when either is missing or unparseable).

    Times of the same day in the tool's own format are subtracted without a date parser
    (``runs`` computes this for every listed run).
    """
    if started is None or completed is None:
        return None
    if len(started) == len(completed) == 24 and started[:11] == completed[:11]:
        try:
            return round(_second_of_day(completed) - _second_of_day(started), 3)
        except ValueError:
            pass
    start, end = parse_iso_utc(started), parse_iso_utc(completed)
    return round(end - start, 3) if start is not None and end is not None else None


def _second_of_day(stamp: str) -> float:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` -> seconds since midnight."""
    return int(stamp[11:13]) * 3600 + int(stamp[14:16]) * 60 + float(stamp[17:23])


def _first_failed(manifest: dict[str, Any]) -> str | None:
    """The stage named by the run's status detail, else the first stage marked failed."""
    named = failed_stage_of(manifest.get("status_detail"))
    if named is not None:
        return named
    failed = [c for c in manifest["commands"] if c.get("status") == "failed"]
    failed.sort(key=lambda c: (str(c.get("completed_at") or "~"), c["index"]))
    return str(failed[0]["id"]) if failed else None
