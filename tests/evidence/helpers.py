"""Helpers for the task-evidence, spec-guard and review tests: drive the real CLI in a tmp repo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import GIT_IDENTITY, cli_env, run_cli
from conftest import assert_usage_error as assert_usage_error

TASK = "0202-orchestrator-hardening"
SEED_RUN = "2025-10-31T22-56-34-431Z-9574035c"

#: The real checklist of the seed (``tasks/tasks-0202-orchestrator-hardening.md``).
SEED_CHECKLIST = """\
# Task Checklist — Orchestrator Resilience Hardening (0202)

> Export `MCP_RUNNER_TASK_ID=0202-orchestrator-hardening` before executing orchestrator commands. \
Mirror status across `/tasks`, `docs/TASKS.md`, and `.agent/task/0202-orchestrator-hardening.md`. \
Every `[x]` entry must include the manifest path that proves completion.

## Foundation
- [x] Synchronize collateral — `tasks/index.json`, `docs/PRD.md`, `docs/TECH_SPEC.md`, \
`docs/ACTION_PLAN.md`, `.agent/task/0202-orchestrator-hardening.md` reference Task 0202; \
Evidence: `.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`.
- [x] Prepare run directories — `.runs/0202-orchestrator-hardening/cli/` initializes via \
diagnostics run; Evidence: \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`.
- [x] Environment defaults — `MCP_RUNNER_TASK_ID` exported in shell / CI and reflected in \
diagnostics manifest task id; Evidence: \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`.

## Persistence Reliability
- [x] Implement lock retry + backoff in `TaskStateStore` with bounded attempts; Evidence: \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`, tests \
`orchestrator/tests/TaskStateStore.test.ts`.
- [x] Update `PersistenceCoordinator` to persist manifests when snapshot retries exhaust; \
Evidence: `.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`, \
tests `orchestrator/tests/PersistenceCoordinator.test.ts`.

## Heartbeat Safety
- [x] Queue heartbeat writes with awaited promises and 30s manifest throttle; Evidence: \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`.
- [x] Log heartbeat failures and ensure forced flush on completion; Evidence: \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`.

## Output Bounding
- [x] Cap stdout/stderr buffers at 64\u202fKiB per stream in `runCommandStage`; Evidence: \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`, tests \
`orchestrator/tests/Manifest.test.ts`.
- [x] Truncate error payloads in `appendCommandError` to ≤8\u202fKiB; Evidence: \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`, tests \
`orchestrator/tests/Manifest.test.ts`.

- [x] Run diagnostics (`npx codex-orchestrator start diagnostics --format json`); Evidence: \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`.
- [x] Guardrails — `node scripts/spec-guard.mjs --dry-run`, `npm run lint`, `npm run test`; \
Evidence: `.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`.
- [x] Reviewer hand-off — `npm run review` executed with latest manifest; Evidence: \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`.
- [x] Documentation sync — Update `docs/TASKS.md` and `.agent/task/0202-orchestrator-hardening.md` \
checklist mirrors with manifest paths; Evidence: \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T22-56-34-431Z-9574035c/manifest.json`.

_Flip each `[ ]` to `[x]` with the exact manifest path (e.g., \
`.runs/0202-orchestrator-hardening/cli/2025-10-31T20-15-00Z/manifest.json`) once acceptance \
criteria are satisfied._
"""


def cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``codex-orchestrator ARGS`` in ``root`` (``env`` adds environment variables)."""
    return run_cli(root, *args, env=cli_env(root, **env))


def cli_json(root: Path, *args: str, **env: str) -> tuple[int, Any]:
    """Run the CLI with ``--format json``: exit code and the one JSON document on stdout."""
    result = cli(root, *args, "--format", "json", **env)
    return result.returncode, json.loads(result.stdout)


def write(root: Path, path: str, text: str | bytes) -> Path:
    """Write a file under ``root`` (creating directories); return its path."""
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_text(text, encoding="utf-8")
    return target


def write_manifest(
    root: Path, task: str, run_id: str, status: str = "succeeded", **fields: Any
) -> str:
    """Write a minimal run manifest; return its path relative to ``root``."""
    relative = f".runs/{task}/cli/{run_id}/manifest.json"
    document = {
        "version": 1,
        "task_id": task,
        "task_slug": task,
        "run_id": run_id,
        "pipeline_id": "diagnostics",
        "status": status,
        "status_detail": None if status == "succeeded" else "stage:test:failed",
        "started_at": "2025-10-31T22:56:34.431Z",
        "completed_at": "2025-10-31T22:57:00.000Z",
        "summary": "Pipeline diagnostics succeeded\nStages: 1 succeeded\nGuardrails: passed",
        "commands": [],
        **fields,
    }
    write(root, relative, json.dumps(document, indent=2))
    return relative


def write_index(root: Path, *items: dict[str, Any]) -> None:
    """Write ``tasks/index.json`` with ``items``."""
    write(root, "tasks/index.json", json.dumps({"items": list(items)}, indent=2))


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` and return its output."""
    completed = subprocess.run(
        ["git", *GIT_IDENTITY, *args],
        cwd=root,
        env=cli_env(root),
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout


def git_repo(root: Path, branch: str = "main") -> Path:
    """Make ``root`` a git repository with one empty commit on ``branch``."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", branch)
    git(root, "commit", "-q", "--allow-empty", "-m", "init")
    return root


def commit_all(root: Path, message: str = "change") -> None:
    """Commit every change of the working tree."""
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
