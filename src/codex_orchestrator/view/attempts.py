"""Every attempt of every stage, with its place in time, from a manifest.

An entry records its attempts in ``attempt_history`` (retries, resumes) when the runner keeps
one; otherwise the entry's own ``started_at``/``completed_at`` stand for its one attempt. A
stage that never started has no attempt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from codex_orchestrator.util.clock import parse_iso_utc
from codex_orchestrator.util.jsonio import array_objects
from codex_orchestrator.util.numeric import finite


class Attempt(NamedTuple):
    """One attempt of one stage: number, shown status, start and end (epoch seconds)."""

    stage_index: int
    stage_id: str
    number: int
    status: str
    start: float | None
    end: float | None
    exit_code: object


def _time(value: object) -> float | None:
    return parse_iso_utc(value) if isinstance(value, str) else None


def shown_status(entry: Mapping[str, Any]) -> str:
    """The stage status as a reader needs it: ``cancelled`` and ``timed out`` told apart."""
    status = str(entry.get("status"))
    summary = str(entry.get("summary") or "")
    if status == "failed" and summary.startswith("cancelled"):
        return "cancelled"
    if status == "failed" and (entry.get("timed_out") is True or summary.startswith("timed out")):
        return "timed out"
    return status


def _item_status(item: Mapping[str, Any]) -> str:
    """How one recorded attempt ended, from its own fields."""
    status = item.get("status")
    if isinstance(status, str):
        return status
    if item.get("cancelled") is True:
        return "cancelled"
    if item.get("timed_out") is True:
        return "timed out"
    return "succeeded" if item.get("exit_code") == 0 else "failed"


def _from_history(index: int, stage_id: str, history: list[Any]) -> list[Attempt]:
    """Attempts from ``attempt_history``-shaped items."""
    attempts = []
    for position, item in enumerate(history, start=1):
        if not isinstance(item, dict):
            continue
        start = _time(item.get("started_at"))
        end = _time(item.get("completed_at"))
        duration = finite(item.get("duration_seconds"))
        if end is None and start is not None and duration is not None:
            end = start + duration
        if start is None and end is not None and duration is not None:
            start = end - duration
        number = item.get("attempt")
        attempts.append(
            Attempt(
                index,
                stage_id,
                number if isinstance(number, int) else position,
                _item_status(item),
                start,
                end,
                item.get("exit_code"),
            )
        )
    return attempts


def history_from_events(lines: Iterable[bytes]) -> dict[int, list[dict[str, Any]]]:
    """Each stage's attempts rebuilt from ``runner.ndjson`` (``stage_started``/``_finished``).

    Used for the attempts a manifest entry no longer describes (a stage re-run by ``resume``);
    an attempt that started and never finished (its orchestrator was killed) is
    ``interrupted``.
    """
    history: dict[int, list[dict[str, Any]]] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a torn line
        if not isinstance(event, dict) or not isinstance(event.get("index"), int):
            continue
        attempts = history.setdefault(event["index"], [])
        if event.get("event") == "stage_started":
            attempts.append(
                {
                    "attempt": event.get("attempt"),
                    "started_at": event.get("timestamp"),
                    "status": "interrupted",
                }
            )
        elif (
            event.get("event") == "stage_finished"
            and attempts
            and "completed_at" not in attempts[-1]
        ):
            attempts[-1].update(
                completed_at=event.get("timestamp"),
                status=event.get("status"),
                exit_code=event.get("exit_code"),
            )
    return history


def stage_attempts(
    manifest: Mapping[str, Any],
    now: float,
    earlier: Mapping[int, list[dict[str, Any]]] | None = None,
) -> list[Attempt]:
    """The attempts of every stage in manifest order; a running (or interrupted) one ends at ``now``.

    Past attempts come from the entry's ``attempt_history`` (kept for stages that may retry),
    else from ``earlier`` (`history_from_events`: stages re-run by ``resume``); the entry's own
    fields describe its latest attempt, which the history may not hold yet (it is running).
    """
    out: list[Attempt] = []
    for entry in array_objects(manifest.get("commands")):
        raw_index = entry.get("index")
        index = raw_index if isinstance(raw_index, int) else 0
        stage_id = str(entry.get("id"))
        attempts = entry.get("attempts")
        number = attempts if isinstance(attempts, int) and attempts > 0 else 1
        history = entry.get("attempt_history")
        if isinstance(history, list) and history:
            past = _from_history(index, stage_id, history)
        else:
            items = (earlier or {}).get(index, [])
            past = _from_history(index, stage_id, [i for i in items if _before(i, number)])
        start = _time(entry.get("started_at"))
        if past and past[-1].number >= number:  # the history already holds the latest attempt
            past[-1] = past[-1]._replace(status=shown_status(entry))
        elif start is not None:
            end = _time(entry.get("completed_at"))
            if end is None and entry.get("status") in ("running", "interrupted"):
                end = now
            status = shown_status(entry)
            past.append(
                Attempt(index, stage_id, number, status, start, end, entry.get("exit_code"))
            )
        out += past
    return out


def _before(item: Mapping[str, Any], number: int) -> bool:
    attempt = item.get("attempt")
    return isinstance(attempt, int) and attempt < number
