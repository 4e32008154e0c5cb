"""``spec-guard``: code changes need spec changes; specs need a recent ``last_review``."""

from __future__ import annotations

import argparse

from codex_orchestrator.errors import EXIT_FAILED, EXIT_OK
from codex_orchestrator.evidence.spec_guard import MAX_REVIEW_AGE_DAYS, guard
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter
from codex_orchestrator.util.wording import plural


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Run the guard; exit 1 on findings unless ``--dry-run``."""
    report = guard(Workspace.from_env().root, args.base)
    base = f"{report.base_ref} ({report.base[:12]})" if report.base else report.base_ref
    lines = [
        f"spec-guard: base {base}; {len(report.changed_code)} code and "
        f"{plural(len(report.changed_specs), 'spec/index file')} changed"
    ]
    lines += [f"- {finding.message}" for finding in report.findings]
    if report.ok:
        lines.append(
            "spec-guard: passed (code changes come with spec changes; "
            f"specs reviewed within {MAX_REVIEW_AGE_DAYS} days)"
        )
    else:
        dry = " (dry run: not failing)" if args.dry_run else ""
        lines.append(f"spec-guard: failed with {plural(len(report.findings), 'finding')}{dry}")
    reporter.result(report.as_json(), "\n".join(lines))
    return EXIT_OK if report.ok or args.dry_run else EXIT_FAILED
