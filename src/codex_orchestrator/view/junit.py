"""JUnit XML of a run, for CI test-report views (Jenkins' JUnit plugin, GitLab, GitHub actions
that read JUnit), built from the run directory alone.

``<testsuites>`` holds one ``<testsuite>`` per run: the run itself, then its child runs
(``child_runs[]``, sub-pipeline stages) depth-first. Each stage is a ``<testcase>`` (``name``:
stage id, ``classname``: pipeline id, ``time``: seconds) with, as its outcome:

- a failed stage: ``<failure message=summary type=reason>``, the text holding the summary and
  the stage's error file; a stage that was cancelled, lost with its worker, or left running is
  an ``<error>`` instead (the test did not get to say pass or fail);
- a skipped stage (allowed failure, optional child, a need failed, tool missing, never
  started): ``<skipped message="reason: summary">``;
- every stage that ran: ``<system-out>``/``<system-err>`` with the tail of its logs (the last
  `LOG_TAIL_LINES` lines, at most `LOG_TAIL_BYTES`).

Every text and attribute passes through `neutralise` (escape sequences dropped, control
characters made visible) and then loses what XML 1.0 cannot carry (lone surrogates,
U+FFFE/U+FFFF); ElementTree escapes the rest, so no byte a stage printed can break the document
or add markup to it.
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from codex_orchestrator.errors import OrchestratorError
from codex_orchestrator.records.manifest import MAX_CHILD_DEPTH, load_manifest
from codex_orchestrator.records.run_layout import COMMANDS_DIR_NAME, ERRORS_DIR_NAME, RunLayout
from codex_orchestrator.records.statuses import TERMINAL_RUN_STATUSES, StageFailure, StageStatus
from codex_orchestrator.util.clock import parse_iso_utc
from codex_orchestrator.util.ids import is_valid_id
from codex_orchestrator.util.jsonio import array_objects, atomic_write_bytes
from codex_orchestrator.util.safefs import UnreadableFileError
from codex_orchestrator.util.terminal_text import REPLACEMENT, neutralise
from codex_orchestrator.view.attempts import shown_status
from codex_orchestrator.view.logtail import read_error_file, run_file, tail_lines
from codex_orchestrator.view.rows import recorded_seconds

LOG_TAIL_LINES = 200
LOG_TAIL_BYTES = 64 * 1024
#: Characters XML 1.0 cannot hold (besides the C0 controls `neutralise` already replaced).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: ``status_detail`` kinds that mean the stage's machinery failed, not the stage's check.
_LOST = (StageFailure.WORKER_LOST, StageFailure.SCHEDULER_LOST)


def junit_xml(run_dir: Path) -> bytes:
    """The JUnit XML document (UTF-8, with declaration) of the run in ``run_dir``.

    Raises `CorruptManifestError` (exit 2) when the run's own manifest is missing or corrupt;
    a child run that cannot be read becomes a suite with one ``<error>`` saying why.
    """
    manifest = load_manifest(RunLayout(run_dir).manifest)
    suites = list(_suites(run_dir, manifest, depth=0, seen=set()))
    root = ET.Element("testsuites", name=_attr(f"codex-orchestrator run {manifest['run_id']}"))
    for key in ("tests", "failures", "errors"):
        root.set(key, str(sum(int(suite.get(key, "0")) for suite in suites)))
    root.set("time", suites[0].get("time", "0.000"))
    for number, suite in enumerate(suites):
        suite.set("id", str(number))
        root.append(suite)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def write_junit(run_dir: Path, path: Path) -> None:
    """Write `junit_xml` of ``run_dir`` to ``path`` atomically (a link there is replaced)."""
    atomic_write_bytes(path, junit_xml(run_dir))


def _suites(
    run_dir: Path, manifest: Mapping[str, Any], depth: int, seen: set[str]
) -> Iterator[ET.Element]:
    seen.add(str(manifest.get("run_id")))
    yield _suite(run_dir, manifest)
    for child in array_objects(manifest.get("child_runs")):
        child_id = child.get("run_id")
        if not isinstance(child_id, str) or child_id in seen:
            continue
        child_dir = run_dir.parent / child_id
        try:
            if not is_valid_id(child_id):
                raise ValueError("not a valid run id")
            if depth >= MAX_CHILD_DEPTH:
                raise ValueError(f"nested more than {MAX_CHILD_DEPTH} levels deep")
            child_manifest = load_manifest(RunLayout(child_dir).manifest)
        except (OrchestratorError, OSError, ValueError) as error:
            seen.add(child_id)
            yield _unreadable_child(manifest, child, str(error))
            continue
        yield from _suites(child_dir, child_manifest, depth + 1, seen)


def _suite(run_dir: Path, manifest: Mapping[str, Any]) -> ET.Element:
    pipeline = str(manifest.get("pipeline_id"))
    suite = ET.Element("testsuite", name=_attr(pipeline))
    properties = ET.SubElement(suite, "properties")
    for name in ("run_id", "task_id", "pipeline_title", "status", "status_detail"):
        value = manifest.get(name)
        if value is not None:
            ET.SubElement(properties, "property", name=name, value=_attr(value))
    for name in ("parent_run_id", "executor"):
        if isinstance(manifest.get(name), str):
            ET.SubElement(properties, "property", name=name, value=_attr(manifest[name]))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    for entry in array_objects(manifest.get("commands")):
        case, outcome = _case(run_dir, manifest, entry)
        suite.append(case)
        counts["tests"] += 1
        if outcome:
            counts[outcome] += 1
        total += float(case.get("time", "0"))
    for key, value in counts.items():
        suite.set(key, str(value))
    run_seconds = recorded_seconds(manifest)
    suite.set("time", _seconds(run_seconds if run_seconds is not None else total))
    started = parse_iso_utc(str(manifest.get("started_at") or ""))
    if started is not None:
        # Jenkins' schema takes the timestamp without a zone; the run's times are UTC.
        suite.set("timestamp", _utc(started))
    if isinstance(manifest.get("host"), str) and manifest["host"].strip():
        suite.set("hostname", _attr(manifest["host"]))
    suite.set("package", _attr(manifest.get("task_id")))
    return suite


def _case(
    run_dir: Path, manifest: Mapping[str, Any], entry: Mapping[str, Any]
) -> tuple[ET.Element, str | None]:
    """The testcase of one stage and which count it adds to (None: it passed)."""
    stage_id = str(entry.get("id"))
    case = ET.Element(
        "testcase", name=_attr(stage_id), classname=_attr(manifest.get("pipeline_id"))
    )
    case.set("time", _seconds(recorded_seconds(entry) or 0.0))
    status = entry.get("status")
    summary = str(entry.get("summary") or "")
    outcome: str | None = None
    if status == StageStatus.FAILED:
        reason, error_text = _error_file(run_dir, entry)
        kind = _error_kind(manifest, entry, stage_id)
        outcome = "errors" if kind else "failures"
        tag = "error" if kind else "failure"
        body = "\n\n".join(part for part in (summary, error_text) if part)
        element = ET.SubElement(case, tag, message=_attr(summary or shown_status(entry)))
        element.set("type", _attr(kind or reason or shown_status(entry)))
        element.text = _text(body)
    elif status == StageStatus.SKIPPED:
        outcome = "skipped"
        parts = (entry.get("skip_reason"), entry.get("summary"))
        message = ": ".join(_attr(part) for part in parts if part)
        skipped = ET.SubElement(case, "skipped", message=message or "skipped")
        _, error_text = _error_file(run_dir, entry)  # an allowed failure keeps its error file
        if error_text:
            skipped.text = _text(error_text)
    elif status == StageStatus.PENDING:
        outcome = "skipped"
        ended = manifest.get("status") in TERMINAL_RUN_STATUSES
        why = f"not run: the run ended {manifest.get('status')} first" if ended else "not run yet"
        ET.SubElement(case, "skipped", message=_attr(why))
    elif status != StageStatus.SUCCEEDED:
        outcome = "errors"
        message = f"did not finish: stage {status}, run {manifest.get('status')}"
        error = ET.SubElement(case, "error", message=_attr(message), type=_attr(str(status)))
        error.text = _text(summary)
    if entry.get("kind") != "subpipeline":
        for key, tag in (("log_path", "system-out"), ("stderr_log_path", "system-err")):
            tail = _log_tail(run_dir, entry.get(key))
            if tail:
                ET.SubElement(case, tag).text = tail
    return case, outcome


def _error_kind(manifest: Mapping[str, Any], entry: Mapping[str, Any], stage_id: str) -> str:
    """Why a failed stage is an error rather than a failure, or "" when it is a failure."""
    if shown_status(entry) == "cancelled":
        return "cancelled"
    detail = manifest.get("status_detail")
    for kind in _LOST:
        if detail == f"stage:{stage_id}:{kind.value}":
            return kind.value
    return ""


def _error_file(run_dir: Path, entry: Mapping[str, Any]) -> tuple[str, str]:
    """The error file's ``reason`` and its content shown as indented JSON (or why not)."""
    path = run_file(run_dir, ERRORS_DIR_NAME, entry.get("error_file"))
    if path is None:
        return "", ""
    shown = f"errors/{path.name}"
    try:
        document = read_error_file(path)
    except FileNotFoundError:
        return "", f"error file {shown} is missing"
    except (UnreadableFileError, ValueError) as error:
        return "", f"error file {shown} is unreadable or corrupt ({error})"
    reason = document.get("reason") if isinstance(document, dict) else None
    body = json.dumps(document, indent=2, ensure_ascii=False)
    return (reason if isinstance(reason, str) else ""), f"{shown}:\n{body}"


def _log_tail(run_dir: Path, recorded: object) -> str:
    path = run_file(run_dir, COMMANDS_DIR_NAME, recorded)
    if path is None:
        return ""
    shown = f"commands/{path.name}"
    try:
        tail = tail_lines(path, LOG_TAIL_LINES, LOG_TAIL_BYTES)
    except FileNotFoundError:
        return f"[log {shown} is missing]"
    except UnreadableFileError as error:
        return f"[log {shown} cannot be read: {error.reason}]"
    text = "\n".join(tail.lines)
    if tail.omitted:
        text = f"[{tail.omitted} earlier bytes of {shown} not shown]\n{text}"
    return _text(text)


def _unreadable_child(
    parent: Mapping[str, Any], child: Mapping[str, Any], reason: str
) -> ET.Element:
    pipeline = _attr(child.get("pipeline_id") or "child")
    suite = ET.Element("testsuite", name=pipeline, tests="1", failures="0", errors="1")
    suite.set("skipped", "0")
    suite.set("time", "0.000")
    suite.set("package", _attr(parent.get("task_id")))
    case = ET.SubElement(
        suite, "testcase", name=_attr(child.get("stage_id") or "child"), classname=pipeline
    )
    case.set("time", "0.000")
    message = f"child run {child.get('run_id')} cannot be read: {reason}"
    ET.SubElement(case, "error", message=_attr(message), type="unreadable-child-run")
    return suite


def _text(value: object) -> str:
    """``value`` as XML text: neutralised, then without what XML 1.0 cannot hold."""
    return _NOT_XML.sub(REPLACEMENT, neutralise(str(value)))


def _attr(value: object) -> str:
    """``value`` as an XML attribute: one line (`_text` with newlines made visible)."""
    return _NOT_XML.sub(REPLACEMENT, neutralise(str(value), keep_newlines=False))


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def _utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
