"""Aggregates of ``metrics.json``: per task, per pipeline and per stage (``stats``).

The file is streamed line by line; a line that does not parse or is not a run's metrics (a
torn write, a hand edit) is counted in ``parse_errors`` and skipped. Lines written before the
metrics line carried ``stages`` still count for the run figures. A duration that is not a finite
number (``NaN``, ``Infinity`` or ``1e999`` in a hand-edited line) counts as absent.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codex_orchestrator.records.statuses import RunStatus
from codex_orchestrator.util.clock import iso_utc, parse_iso_utc
from codex_orchestrator.util.jsonio import array_objects
from codex_orchestrator.util.numeric import finite
from codex_orchestrator.util.safefs import open_no_follow


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


class RunFigures:
    """Counts and durations of a set of runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.succeeded = 0
        self.failed = 0
        self.cancelled = 0
        self.skipped = 0
        self.guarded = 0
        self.durations: list[float] = []

    def add(self, line: dict[str, Any]) -> None:
        """Count one metrics line."""
        self.runs += 1
        status = line.get("status")
        if status == RunStatus.SUCCEEDED:
            self.succeeded += 1
        elif status == RunStatus.FAILED:
            self.failed += 1
        elif status == RunStatus.CANCELLED:
            self.cancelled += 1
        elif status == RunStatus.SKIPPED:
            self.skipped += 1
        if line.get("guardrails_present") is True:
            self.guarded += 1
        duration = finite(line.get("duration_seconds"))
        if duration is not None:
            self.durations.append(duration)

    def to_json(self) -> dict[str, Any]:
        """Counts, rates (fractions 0-1) and duration percentiles."""
        ordered = sorted(self.durations)
        return {
            "runs": self.runs,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "skipped": self.skipped,
            "success_rate": _rate(self.succeeded, self.runs),
            "guardrail_coverage": _rate(self.guarded, self.runs),
            "duration_seconds": {
                "p50": percentile(ordered, 0.5),
                "p95": percentile(ordered, 0.95),
                "max": ordered[-1] if ordered else None,
                "average": round(sum(ordered) / len(ordered), 3) if ordered else None,
            },
        }


class StageFigures:
    """Failures, retries and durations of one stage across runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.failures = 0
        self.retries = 0
        self.durations: list[float] = []

    def add(self, stage: dict[str, Any]) -> None:
        """Count one stage entry of a metrics line."""
        self.runs += 1
        if stage.get("status") == "failed":
            self.failures += 1
        attempts = stage.get("attempts")
        if isinstance(attempts, int) and attempts > 1:
            self.retries += attempts - 1
        duration = finite(stage.get("duration_seconds"))
        if duration is not None:
            self.durations.append(duration)

    def to_json(self, stage_id: str) -> dict[str, Any]:
        """The stage's figures."""
        return {
            "stage_id": stage_id,
            "runs": self.runs,
            "failures": self.failures,
            "retries": self.retries,
            "duration_p50_seconds": percentile(sorted(self.durations), 0.5),
        }


class PipelineFigures(RunFigures):
    """Run figures of one pipeline plus its stages."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: dict[str, StageFigures] = {}

    def add(self, line: dict[str, Any]) -> None:
        """Count one metrics line and its stages."""
        super().add(line)
        for stage in array_objects(line.get("stages")):
            if isinstance(stage.get("id"), str):
                self.stages.setdefault(stage["id"], StageFigures()).add(stage)


class TaskFigures(RunFigures):
    """Everything ``stats`` reports for one task."""

    def __init__(self, task_id: str, metrics_file: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.metrics_file = metrics_file
        self.parse_errors = 0
        self.pipelines: dict[str, PipelineFigures] = {}

    def add(self, line: dict[str, Any]) -> None:
        """Count one metrics line for the task and its pipeline."""
        super().add(line)
        pipeline = line.get("pipeline_id")
        key = pipeline if isinstance(pipeline, str) else "?"
        self.pipelines.setdefault(key, PipelineFigures()).add(line)

    def to_json(self) -> dict[str, Any]:
        """The task's figures, each pipeline's, and each of its stages'."""
        document: dict[str, Any] = {"task_id": self.task_id, "metrics_file": self.metrics_file}
        document.update(super().to_json())
        document["parse_errors"] = self.parse_errors
        document["pipelines"] = [
            {
                "pipeline_id": pipeline_id,
                **figures.to_json(),
                "stages": [stage.to_json(sid) for sid, stage in figures.stages.items()],
            }
            for pipeline_id, figures in sorted(self.pipelines.items())
        ]
        return document

    def summary(self) -> dict[str, Any]:
        """``metrics-summary.json``: the TypeScript tool's fields, then the pipelines."""
        figures = self.to_json()
        return {
            "generated_at": iso_utc(),
            "task_id": self.task_id,
            "metrics_file": self.metrics_file,
            "entries_total": self.runs,
            "entries_succeeded": self.succeeded,
            "entries_failed": self.failed,
            "entries_cancelled": self.cancelled,
            "success_rate": figures["success_rate"],
            "guardrail_coverage": figures["guardrail_coverage"],
            "average_duration_seconds": figures["duration_seconds"]["average"],
            "parse_errors": self.parse_errors,
            "duration_seconds": figures["duration_seconds"],
            "pipelines": figures["pipelines"],
        }


def collect(figures: TaskFigures, path: Path, since: float | None) -> None:
    """Stream ``path`` into ``figures``; lines started before ``since`` are skipped."""
    for raw in _lines(path):
        try:
            line = json.loads(raw)
        except (ValueError, RecursionError):
            figures.parse_errors += 1
            continue
        if not isinstance(line, dict) or not isinstance(line.get("run_id"), str):
            figures.parse_errors += 1
            continue
        if since is not None:
            started = line.get("started_at")
            moment = parse_iso_utc(started) if isinstance(started, str) else None
            if moment is None or moment < since:
                continue
        figures.add(line)


def _lines(path: Path) -> Iterator[bytes]:
    """Non-blank lines of a regular file (nothing for a FIFO, a device or a missing file)."""
    try:
        fd = open_no_follow(path, os.O_RDONLY)
    except OSError:
        return
    with os.fdopen(fd, "rb") as handle:
        for raw in handle:
            if raw.strip():
                yield raw
