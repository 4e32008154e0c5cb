"""The final records of a run: run summary, metrics line, terminal manifest, state snapshot.

The terminal manifest, the metrics line and the state snapshot are fsynced; a failure to write
one of them is reported and never stops the others (see `PersistenceCoordinator`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codex_orchestrator.persistence.coordinator import PersistenceCoordinator
from codex_orchestrator.persistence.task_state import RunRecord, TaskStateStore
from codex_orchestrator.records.cancel_request import apply_requests, closing_requests
from codex_orchestrator.records.manifest import (
    OUTCOME_FIELDS,
    Manifest,
    ManifestStore,
    StageEntry,
    write_run_summary,
)
from codex_orchestrator.records.statuses import RunStatus, StageStatus, run_exit_code
from codex_orchestrator.records.summaries import is_guardrail, run_summary_text
from codex_orchestrator.records.workspace import Settings, Workspace
from codex_orchestrator.util.clock import iso_utc, parse_iso_utc
from codex_orchestrator.util.console import note

_SUMMARY_STAGE_FIELDS = (
    "index",
    "id",
    "kind",
    "status",
    "exit_code",
    "summary",
    "duration_seconds",
    "error_file",
)


def record_finished_run(
    workspace: Workspace,
    settings: Settings,
    store: ManifestStore,
    pipeline_id: str,
    status: str,
    detail: str | None,
) -> int:
    """Close the manifest with ``status`` and write every final record; return the exit code.

    The run's cancel requests are closed under their lock until the terminal manifest is
    written, so that a ``cancel`` racing the end either is recorded here or sees the run ended
    (see `cancelrequest`).
    """
    with closing_requests(store.run_dir):
        data = store.data
        completed = iso_utc()
        exit_code = run_exit_code(status, detail)
        with store.lock:
            # a `cancel` request says who stopped the run, and why (dropped if it came too late)
            detail = apply_requests(store.run_dir, data, status, detail)
            _close_manifest(data, status, detail, exit_code, completed)
            try:
                summary_path = write_run_summary(store.run_dir, _run_summary(workspace, store))
                data["run_summary_path"] = workspace.display(summary_path)
            except OSError as error:
                note(f"warning: run {data['run_id']}: run-summary.json not written ({error})")

        def write_manifest(metrics_recorded: bool) -> None:
            with store.lock:
                data["metrics_recorded"] = metrics_recorded
            store.persist(durable=True)

        task_id = data["task_id"]
        state = TaskStateStore.for_task(workspace, settings, task_id, note)
        record = RunRecord(
            task_id=task_id,
            run_id=data["run_id"],
            pipeline_id=pipeline_id,
            status=status,
            timestamp=completed,
            manifest=workspace.display(store.path),
            started_at=data["started_at"],
            status_detail=detail,
            duration_seconds=data["duration_seconds"],
        )
        coordinator = PersistenceCoordinator(
            state, workspace.task_runs_dir(task_id) / "metrics.json", note
        )
        coordinator.finish_run(metrics=_metrics(data), write_manifest=write_manifest, record=record)
        return exit_code


def _close_manifest(
    data: Manifest, status: str, detail: str | None, exit_code: int, completed: str
) -> None:
    """Set the terminal fields; a stage still marked running was interrupted: failed."""
    data.update(
        {
            "status": status,
            "status_detail": detail,
            "exit_code": exit_code,
            "completed_at": completed,
        }
    )
    for entry in data["commands"]:
        if entry["status"] == StageStatus.RUNNING:
            entry.update({"status": StageStatus.FAILED, "completed_at": completed})
    if data["resume_events"] and data["resume_events"][-1].get("outcome") == RunStatus.IN_PROGRESS:
        data["resume_events"][-1]["outcome"] = status
    data["summary"] = run_summary_text(data)
    data["duration_seconds"] = _duration(data["started_at"], completed)


def _duration(started_at: str, completed_at: str) -> float:
    start, end = parse_iso_utc(started_at), parse_iso_utc(completed_at)
    return round(end - start, 3) if start is not None and end is not None else 0.0


def _run_summary(workspace: Workspace, store: ManifestStore) -> dict[str, Any]:
    data = store.data
    fields: Mapping[str, Any] = data
    summary = {key: fields[key] for key in (*OUTCOME_FIELDS, "duration_seconds")}
    summary["manifest"] = workspace.display(store.path)
    summary["stages"] = [
        {key: command.get(key) for key in _SUMMARY_STAGE_FIELDS} for command in data["commands"]
    ]
    summary["child_runs"] = data["child_runs"]
    return summary


def _metrics(data: Manifest) -> dict[str, Any]:
    commands = data["commands"]
    return {
        "run_id": data["run_id"],
        "task_id": data["task_id"],
        "pipeline_id": data["pipeline_id"],
        "status": data["status"],
        "started_at": data["started_at"],
        "completed_at": data["completed_at"],
        "duration_seconds": data["duration_seconds"],
        "commands_passed": sum(
            1 for command in commands if command["status"] == StageStatus.SUCCEEDED
        ),
        "commands_failed": sum(
            1 for command in commands if command["status"] == StageStatus.FAILED
        ),
        "guardrails_present": any(is_guardrail(command) for command in commands),
        "recorded_at": iso_utc(),
        "artifact_path": data["artifact_root"],
        "child_runs": [child["run_id"] for child in data["child_runs"]],
        "stages": [_stage_metrics(command) for command in commands],
    }


def _stage_metrics(command: StageEntry) -> dict[str, Any]:
    """A stage as ``stats`` needs it: id, status, attempts and duration (compact)."""
    return {
        "id": command["id"],
        "status": command["status"],
        "attempts": command.get("attempts") or 0,
        "duration_seconds": command.get("duration_seconds"),
    }
