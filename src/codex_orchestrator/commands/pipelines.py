"""``codex-orchestrator pipelines``: the pipelines a repository offers, with their stages; runs
nothing."""

from __future__ import annotations

import argparse
from typing import Any

from codex_orchestrator.commands.common import loaded_config
from codex_orchestrator.errors import EXIT_OK
from codex_orchestrator.pipelines.graph import needs_of
from codex_orchestrator.pipelines.model import BUILTIN_PIPELINE, Pipeline
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """List every pipeline (configured ones first, then the built-in) and its stages."""
    config = loaded_config(Workspace.from_env())
    default = config.default_pipeline or BUILTIN_PIPELINE
    listed = [_entry(config.pipelines[name], name == default) for name in config.pipelines]
    document = {"default_pipeline": default, "pipelines": listed}
    reporter.result(document, "\n".join(_lines(entry) for entry in listed))
    return EXIT_OK


def _entry(pipeline: Pipeline, default: bool) -> dict[str, Any]:
    needs = needs_of(pipeline.stages)
    return {
        "id": pipeline.id,
        "title": pipeline.title,
        "description": pipeline.description,
        "source": pipeline.source,
        "default": default,
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


def _lines(entry: dict[str, Any]) -> str:
    marks = [mark for mark in ("default" if entry["default"] else "", entry["source"]) if mark]
    title = f": {entry['title']}" if entry["title"] and entry["title"] != entry["id"] else ""
    stages = ", ".join(stage["id"] for stage in entry["stages"]) or "(none)"
    return f"{entry['id']} ({', '.join(marks)}){title}\n  stages: {stages}"
