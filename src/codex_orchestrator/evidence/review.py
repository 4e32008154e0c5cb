"""Review hand-off: ``review.md`` for a run, and a record of the hand-off in its manifest.

``review.md`` (in the run directory) gives the run's status, each stage with its summary, the
tail of the error file of each failed stage, the manifest's ``Guardrails:`` line and the
evidence paths (manifest, run summary, logs, error files). When a ``codex`` executable is on
the PATH, ``codex review <manifest>`` is launched on the run and its exit code is the outcome
(mode ``codex``); otherwise the review is ``review.md`` itself (mode ``builtin``, exit 0). Each
hand-off appends ``{requested_at, review_path, mode, exit_code}`` to the manifest's
``reviews`` list.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codex_orchestrator.errors import OutsideRootError
from codex_orchestrator.records.liveness import refuse_if_alive
from codex_orchestrator.records.manifest import Manifest, StageEntry, load_manifest
from codex_orchestrator.records.run_layout import RunLayout
from codex_orchestrator.records.statuses import RunStatus, StageStatus
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.clock import iso_utc
from codex_orchestrator.util.console import note
from codex_orchestrator.util.jsonio import (
    atomic_write_bytes,
    atomic_write_json,
    encode_record,
    read_json,
)
from codex_orchestrator.util.safefs import ERROR_FILE_READ_LIMIT, resolve_within
from codex_orchestrator.util.wording import shown_summary, status_text

TAIL_LINES = 30
STAGE_EVIDENCE_KEYS = ("log_path", "stderr_log_path", "error_file")
_BACKTICK_RUN = re.compile(r"`+")


@dataclass(frozen=True)
class ReviewResult:
    """The outcome of a hand-off."""

    task_id: str
    run_id: str
    status: str
    manifest: str
    review_path: str
    review: str
    mode: str
    exit_code: int


def review(workspace: Workspace, run_dir: Path, *, quiet_stdout: bool) -> ReviewResult:
    """Write ``review.md``, hand the run to ``codex review`` if present, record the hand-off.

    ``quiet_stdout`` sends codex's standard output to stderr (for one JSON document on stdout).
    """
    manifest_path = RunLayout(run_dir).manifest
    manifest = load_manifest(manifest_path)
    if manifest.get("status") in (RunStatus.QUEUED, RunStatus.IN_PROGRESS):
        fix = f"review it once it has finished (codex-orchestrator status --watch {run_dir.name})"
        refuse_if_alive(run_dir, manifest, fix)
        note(f"warning: run {run_dir.name} never finished (stale); this reviews its state now")
    text = render_review(workspace, run_dir, manifest)
    review_path = RunLayout(run_dir).review
    atomic_write_bytes(review_path, encode_record(text))
    mode, exit_code = _launch_codex(workspace, manifest_path, quiet_stdout)
    record_review(
        manifest_path,
        {
            "requested_at": iso_utc(),
            "review_path": workspace.display(review_path),
            "mode": mode,
            "exit_code": exit_code,
        },
    )
    return ReviewResult(
        task_id=str(manifest.get("task_id")),
        run_id=run_dir.name,
        status=str(manifest.get("status")),
        manifest=workspace.display(manifest_path),
        review_path=workspace.display(review_path),
        review=text,
        mode=mode,
        exit_code=exit_code,
    )


def _launch_codex(workspace: Workspace, manifest_path: Path, quiet_stdout: bool) -> tuple[str, int]:
    """Run ``codex review <manifest>`` when codex is on the PATH: ("codex", its exit code)."""
    codex = shutil.which("codex")
    if codex is None:
        return "builtin", 0
    command = [codex, "review", workspace.display(manifest_path)]
    try:
        sys.stderr.flush()
        stdout = sys.stderr if quiet_stdout else None
        code = subprocess.run(command, cwd=workspace.root, stdout=stdout, check=False).returncode
    except OSError as error:
        note(f"warning: cannot launch {codex} ({error.strerror}); review.md is the review")
        return "builtin", 0
    return "codex", 128 - code if code < 0 else code


def record_review(manifest_path: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the manifest's ``reviews``, re-reading the manifest just before."""
    manifest = load_manifest(manifest_path)
    reviews = manifest.get("reviews")
    manifest["reviews"] = [*reviews, entry] if isinstance(reviews, list) else [entry]
    atomic_write_json(manifest_path, manifest, durable=True)


def render_review(workspace: Workspace, run_dir: Path, manifest: Manifest) -> str:
    """The markdown of ``review.md``: blocks separated by blank lines."""
    commands = [command for command in manifest["commands"] if isinstance(command, dict)]
    pipeline = manifest.get("pipeline_id")
    if manifest.get("pipeline_title") and manifest.get("pipeline_title") != pipeline:
        pipeline = f"{pipeline} — {manifest['pipeline_title']}"
    blocks = [
        f"# Review — task {manifest.get('task_id')}, run {run_dir.name}",
        f"- Status: **{status_text(manifest.get('status'), manifest.get('status_detail'))}**\n"
        f"- Pipeline: {pipeline}\n"
        f"- Started: {manifest.get('started_at')} · Completed: {manifest.get('completed_at')}\n"
        f"- Manifest: `{workspace.display(RunLayout(run_dir).manifest)}`",
        "## Stages",
        "\n".join(_stage_line(command) for command in commands) or "(no stages)",
    ]
    failures = [c for c in commands if c.get("status") == StageStatus.FAILED or c.get("error_file")]
    if failures:
        blocks.append("## Failures")
        blocks.extend(
            block for command in failures for block in _failure(workspace, run_dir, command)
        )
    blocks += ["## Guardrails", _guardrail_line(manifest.get("summary")), "## Evidence"]
    blocks.append("\n".join(_evidence(workspace, run_dir, commands)))
    return "\n\n".join(blocks) + "\n"


def _stage_line(command: StageEntry) -> str:
    title = f" {command['title']}" if command.get("title") not in (None, command.get("id")) else ""
    exit_code = command.get("exit_code")
    code = f", exit {exit_code}" if exit_code is not None else ""
    status = command.get("status")
    shown = shown_summary(command.get("summary"), status, command.get("id"))
    summary = f": {shown}" if shown else ""
    return f"{command.get('index', '?')}. `{command.get('id')}`{title} — {status}{code}{summary}"


def _failure(workspace: Workspace, run_dir: Path, command: StageEntry) -> list[str]:
    """Markdown blocks for a failed stage: heading, error file, tails of stderr and stdout."""
    heading = f"### {command.get('index', '?')}. `{command.get('id')}` — {command.get('status')}"
    error_file = command.get("error_file")
    if not error_file:
        return [heading, "No error file was recorded."]
    error = _read_error_file(workspace, run_dir, str(error_file))
    if isinstance(error, str):
        return [heading, f"Error file `{error_file}` is not read: {error}."]
    details = error.get("details")
    if not isinstance(details, dict):
        details = {}
    blocks = [heading, f"Error file: `{error_file}` (reason: {error.get('reason')})"]
    for stream in ("stderr", "stdout"):
        tail = "\n".join(str(details.get(stream) or "").rstrip().splitlines()[-TAIL_LINES:])
        if tail:
            fence = "`" * max(3, 1 + max((len(m) for m in _BACKTICK_RUN.findall(tail)), default=0))
            blocks.append(f"{stream} (last {TAIL_LINES} lines at most):")
            blocks.append(f"{fence}text\n{tail}\n{fence}")
    return blocks


def _read_error_file(workspace: Workspace, run_dir: Path, error_file: str) -> dict[str, Any] | str:
    """The error file a manifest names, or why it is not read.

    The manifest is data anyone could have edited: the file must lie inside the run directory
    (after resolving links), be a regular file and stay within `ERROR_FILE_READ_LIMIT` bytes.
    """
    try:
        path = resolve_within(
            workspace.root / error_file, run_dir, error_file, "it is not part of this run"
        )
        error = read_json(path, ERROR_FILE_READ_LIMIT)
    except OutsideRootError:
        return "it lies outside the run directory"
    except (OSError, ValueError) as problem:
        return getattr(problem, "strerror", None) or "not valid JSON"
    return error if isinstance(error, dict) else "not a JSON object"


def _guardrail_line(summary: object) -> str:
    lines = str(summary or "").splitlines()
    found = [line.strip() for line in lines if line.strip().startswith("Guardrails:")]
    return found[-1] if found else "Guardrails: not found in the manifest summary"


def _evidence(workspace: Workspace, run_dir: Path, commands: list[StageEntry]) -> list[str]:
    layout = RunLayout(run_dir)
    lines = [f"- Manifest: `{workspace.display(layout.manifest)}`"]
    named = [("Run summary", layout.run_summary), ("Runner log", layout.events)]
    lines += [f"- {label}: `{workspace.display(path)}`" for label, path in named if path.exists()]
    for command in commands:
        paths = [path for key in STAGE_EVIDENCE_KEYS if (path := command.get(key))]
        if paths:
            lines.append(
                f"- Stage {command.get('id')}: " + ", ".join(f"`{path}`" for path in paths)
            )
    return lines
