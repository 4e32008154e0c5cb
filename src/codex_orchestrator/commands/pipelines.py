"""``codex-orchestrator pipelines``: list the pipelines with their stages; runs nothing."""

from __future__ import annotations

import argparse
from typing import Any

from codex_orchestrator.commands.common import loaded_config
from codex_orchestrator.pipelines.graph import needs_of
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Print every pipeline (configured, then built-in): id, title, source and stage ids."""
    config = loaded_config(Workspace.from_env())
    default = config.default_pipeline or "diagnostics"
    pipelines = []
    for pipeline_id in config.pipelines:
        pipeline = config.pipelines[pipeline_id]
        needs = needs_of(pipeline.stages)
        pipelines.append(
            {
                "id": pipeline.id,
                "title": pipeline.title,
                "description": pipeline.description,
                "source": pipeline.source,
                "default": pipeline.id == default,
                "stages": [
                    {
                        "id": stage.id,
                        "title": stage.title,
                        "kind": stage.kind,
                        "needs": list(needs[stage.id]),
                    }
                    for stage in pipeline.stages
                ],
            }
        )
    reporter.result({"default_pipeline": default, "pipelines": pipelines}, _text(pipelines))
    return 0


def _text(pipelines: list[dict[str, Any]]) -> str:
    lines = []
    for pipeline in pipelines:
        mark = " (default)" if pipeline["default"] else ""
        lines.append(f"{pipeline['id']}{mark} [{pipeline['source']}]: {pipeline['title']}")
        stages = ", ".join(stage["id"] for stage in pipeline["stages"]) or "no stages"
        lines.append(f"  stages: {stages}")
    return "\n".join(lines)
