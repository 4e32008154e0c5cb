"""Human summaries: a stage's one-line summary, the run summary and its guardrail line."""

from __future__ import annotations

from collections import Counter
from typing import Any

from codex_orchestrator.records.errorfile import clean_text
from codex_orchestrator.records.statuses import StageStatus

MAX_SUMMARY_CHARS = 240
GUARDRAIL_STAGE_ID = "spec-guard"


def stage_summary(
    hint: str | None, stdout_tail: bytes, stderr_tail: bytes, exit_code: int | None
) -> str:
    """``hint``; for a failure the tool's result line; else the last output line; else ``exit N``.

    The result lines (pytest, ruff, eslint, cargo, go test...) are a table in
    `codex_orchestrator.records.result_lines`; see docs/diagnostics.md.
    """
    if hint:
        return hint
    if exit_code != 0:
        from codex_orchestrator.records.result_lines import result_line  # failures only

        result = result_line(stdout_tail, stderr_tail)
        if result:
            return result
    for tail in (stdout_tail, stderr_tail):
        line = last_nonempty_line(tail)
        if line:
            return line
    return f"exit {exit_code}"


def last_nonempty_line(tail: bytes) -> str:
    """The last non-blank line of ``tail``, cleaned and cut to 240 characters."""
    for raw in reversed(tail.splitlines()):
        text = clean_text(raw).strip()
        if text:
            return text[:MAX_SUMMARY_CHARS]
    return ""


def is_guardrail(command: dict[str, Any]) -> bool:
    """True for the spec-guard stage (by id, or by a command that runs spec-guard)."""
    return command.get("id") == GUARDRAIL_STAGE_ID or GUARDRAIL_STAGE_ID in str(
        command.get("command") or ""
    )


def guardrail_line(commands: list[dict[str, Any]]) -> str:
    """The one ``Guardrails: …`` line of a finished run."""
    guards = [command for command in commands if is_guardrail(command)]
    if not guards:
        return "Guardrails: not found (no spec-guard stage in this pipeline)"
    statuses = [command["status"] for command in guards]
    if StageStatus.FAILED in statuses:
        word = "failed"
    elif all(status == StageStatus.SUCCEEDED for status in statuses):
        word = "passed"
    else:
        word = "skipped"
    details = "; ".join(f"{command['id']}: {_guard_outcome(command)}" for command in guards)
    return f"Guardrails: {word} ({details})"[:400]


def _guard_outcome(command: dict[str, Any]) -> str:
    if command["status"] == StageStatus.PENDING:
        return "not reached (an earlier stage stopped the run)"
    return str(command.get("summary") or command["status"])


def run_summary_text(manifest: dict[str, Any]) -> str:
    """The manifest ``summary``: outcome, stage counts and exactly one guardrail line."""
    commands = manifest["commands"]
    counts = Counter(command["status"] for command in commands)
    tally = ", ".join(
        f"{counts[name]} {name}"
        for name in (
            StageStatus.SUCCEEDED,
            StageStatus.FAILED,
            StageStatus.SKIPPED,
            StageStatus.PENDING,
        )
        if counts[name]
    )
    status = manifest["status"]
    headline = f"Pipeline {manifest['pipeline_id']} {status}"
    failed = next(
        (command for command in commands if command["status"] == StageStatus.FAILED), None
    )
    if failed is not None:
        headline += f" at stage {failed['id']}: {failed.get('summary') or 'failed'}"
    elif manifest.get("status_detail"):
        headline += f" ({manifest['status_detail']})"
    return f"{headline}\nStages: {tally or 'none'}\n{guardrail_line(commands)}"
