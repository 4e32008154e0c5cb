"""``codex-orchestrator plan [PIPELINE]``: show what would run; runs and writes nothing."""

from __future__ import annotations

import argparse
from typing import Any

from codex_orchestrator.commands.common import loaded_config, only_stages
from codex_orchestrator.pipelines.graph import (
    GraphView,
    is_graph,
    needs_of,
    resolve_max_parallel,
    selected_stages,
)
from codex_orchestrator.pipelines.model import CommandStage, Config, Pipeline
from codex_orchestrator.records.cache_field import cache_text
from codex_orchestrator.records.workspace import Settings, Workspace, resolve_task_id
from codex_orchestrator.util.console import Reporter
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.wording import plural


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Print the resolved pipeline's stages."""
    workspace = Workspace.from_env()
    task_id = resolve_task_id(args.task)
    if args.pipeline is not None:
        validate_id(args.pipeline, "pipeline")
    config = loaded_config(workspace)
    pipeline = config.resolve_pipeline(args.pipeline)
    only = only_stages(pipeline, args.only)
    selected = set(selected_stages(pipeline.stages, only)) if only else None
    settings = Settings.resolve(config.settings)
    caches = _cache_lookups(workspace, config, settings, pipeline, task_id)
    stages = _stages(pipeline, selected, caches)
    configured = settings.max_parallel
    max_parallel = resolve_max_parallel(pipeline.max_parallel, configured)
    graph = GraphView.of(pipeline.stages, max_parallel, pipeline.fail_fast)
    document = {
        "task_id": task_id,
        "pipeline": _pipeline_info(pipeline),
        "stages": stages,
        "graph": graph._asdict(),
    }
    reporter.result(
        document,
        "\n".join([_text(pipeline, stages), *graph.text_lines(), _tally(pipeline, stages)]),
    )
    return 0


def _tally(pipeline: Pipeline, stages: list[dict[str, Any]]) -> str:
    """The last line, which also reads well alone (a stage that runs ``plan`` is summed up by
    its output's last line): how many stages, how many would be skipped, nothing run."""
    skipped = sum(1 for stage in stages if stage.get("skip_reason") or not stage["selected"])
    would_skip = f", {skipped} would be skipped" if skipped else ""
    return f"pipeline {pipeline.id}: {plural(len(stages), 'stage')}{would_skip}; nothing was run (plan)"


def _pipeline_info(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "id": pipeline.id,
        "title": pipeline.title,
        "description": pipeline.description,
        "source": pipeline.source,
    }


def _cache_lookups(
    workspace: Workspace, config: Config, settings: Settings, pipeline: Pipeline, task_id: str
) -> dict[str, dict[str, Any]]:
    """Per cached stage, what a run would find now: read-only, no lock, nothing written."""
    if not any(isinstance(stage, CommandStage) and stage.cache for stage in pipeline.stages):
        return {}
    from codex_orchestrator.engine.cache_step import RunCache

    cache = RunCache(
        workspace, config.settings, settings, pipeline, "plan", task_id, read_only=True
    )
    return cache.plan()


def _stages(
    pipeline: Pipeline, selected: set[str] | None, caches: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = []
    needs = needs_of(pipeline.stages)
    for index, stage in enumerate(pipeline.stages, start=1):
        item: dict[str, Any] = {
            "index": index,
            "id": stage.id,
            "title": stage.title,
            "kind": stage.kind,
            "needs": list(needs[stage.id]),
            "selected": selected is None or stage.id in selected,
        }
        if isinstance(stage, CommandStage):
            item.update(
                command=stage.command or None,
                why=stage.why,
                cwd=stage.cwd,
                allow_failure=stage.allow_failure,
                timeout_seconds=stage.timeout_seconds,
                skip_reason=stage.unavailable_reason(),
                requires=list(stage.requires),
                retries=stage.retries,
                retry_delay_seconds=stage.retry_delay_seconds,
            )
            if stage.id in caches:
                item["cache"] = caches[stage.id]
        else:
            item.update(pipeline=stage.pipeline, optional=stage.optional)
        stages.append(item)
    return stages


def _text(pipeline: Pipeline, stages: list[dict[str, Any]]) -> str:
    pipeline_is_graph = is_graph(pipeline.stages)
    lines = [f"pipeline {pipeline.id} ({pipeline.source}): {pipeline.title}"]
    if pipeline.description:
        lines.append(f"  {pipeline.description}")
    for stage in stages:
        if stage["kind"] == "subpipeline":
            target = f"sub-pipeline {stage['pipeline']}"
        else:
            target = stage["command"] or stage["skip_reason"]
        flags = [name for name in ("allow_failure", "optional") if stage.get(name)]
        if not stage["selected"]:
            flags.append("not selected")
        if stage.get("skip_reason") and stage.get("command"):
            flags.append(stage["skip_reason"])
        if stage.get("retries"):
            flags.append(f"retries {stage['retries']}")
        if stage.get("cache"):
            flags.append(cache_text(stage))
        suffix = f"  [{', '.join(flags)}]" if flags else ""
        if stage["needs"] and pipeline_is_graph:
            suffix += f"  (needs {', '.join(stage['needs'])})"
        lines.append(f"  {stage['index']:>2}. {stage['id']}: {target}{suffix}")
        if stage.get("why"):
            lines.append(f"      why: {stage['why']}")
    return "\n".join(lines)
