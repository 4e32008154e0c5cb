"""Pipeline types: stages, pipelines and the validated config (no parsing, no detection).

`config` builds these from ``codex.orchestrator.json`` and `diagnostics` builds the built-in
pipeline from the repository; both import this module and neither imports the other at load
time. See docs/configuration.md for what each field means in the config file.
"""

# No `from __future__ import annotations` (docs/architecture.md, cold start): typing would
# compile each NamedTuple/TypedDict field written as a string into a ForwardRef at import.

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from codex_orchestrator.errors import UnknownPipelineError
from codex_orchestrator.util.ids import validate_id
from codex_orchestrator.util.suggest import did_you_mean

#: The task index of a repository that opted in to the task workflow (owned by evidence/taskindex;
#: named here so the built-in diagnostics can see the opt-in without importing the evidence layer).
INDEX_PATH = "tasks/index.json"

if TYPE_CHECKING:
    from codex_orchestrator.cache.spec import CacheSpec
BUILTIN_PIPELINE = "diagnostics"


class CommandStage(NamedTuple):
    """A shell command run with ``/bin/sh -c`` in ``cwd`` (relative to the root) with ``env`` added.

    ``requires`` names executables that must be on PATH (the runner skips the stage with
    ``skipped: <tool> not found on PATH`` when one is absent); ``skip_reason``, when set, makes
    the runner skip the stage with that text as its summary (its ``command`` is then empty);
    ``why`` says why the command was chosen; ``task_runner`` (``tox``, ``nox``) names the task
    runner the command is, whose output says when it skipped every environment (the stage is
    then skipped with the runner's reason). These four are set only by the built-in
    diagnostics pipeline, never from the config file. ``cache`` (docs/cache.md): what the stage
    reads and leaves, when its clean successes may be reused.
    """

    id: str
    title: str
    command: str
    cwd: str | None = None
    env: Mapping[str, str] = MappingProxyType({})
    allow_failure: bool = False
    summary_hint: str | None = None
    timeout_seconds: float | None = None
    resources: Mapping[str, float] = MappingProxyType({})
    requires: tuple[str, ...] = ()
    skip_reason: str | None = None
    why: str | None = None
    kind: str = "command"
    needs: tuple[str, ...] | None = None
    retries: int = 0
    retry_delay_seconds: float = 1.0
    task_runner: str | None = None
    cache: "CacheSpec | None" = None

    def unavailable_reason(self) -> str | None:
        """Why the stage cannot run here (its ``skip_reason``, or a required tool off PATH)."""
        if self.skip_reason:
            return self.skip_reason
        if self.requires:
            from shutil import which  # only stages that need tools pay for the import

            for tool in self.requires:
                if which(tool) is None:
                    return f"skipped: {tool} not found on PATH"
        return None


class SubpipelineStage(NamedTuple):
    """A stage that runs another pipeline as a child run; ``optional`` failures are skipped."""

    id: str
    title: str
    pipeline: str
    optional: bool = False
    kind: str = "subpipeline"
    needs: tuple[str, ...] | None = None


Stage = CommandStage | SubpipelineStage


class Pipeline(NamedTuple):
    """A named, ordered list of stages; ``source`` is ``config`` or ``builtin``.

    ``needs`` on any stage makes it a graph (docs/graphs.md): ``max_parallel`` (None: the
    settings decide) bounds how many stages run at once, ``fail_fast`` tears the others down on
    the first failure.
    """

    id: str
    title: str
    description: str | None
    source: str
    stages: tuple[Stage, ...]
    tags: tuple[str, ...] = ()
    guardrails_required: bool | None = None
    metadata: Mapping[str, object] = MappingProxyType({})
    max_parallel: int | None = None
    fail_fast: bool = False


class Pipelines(Mapping[str, Pipeline]):
    """Pipelines by id: the configured ones, then built-ins made on first lookup.

    A built-in is made by its factory only when looked up (e.g. by ``plan`` or ``start``), so
    loading the config never scans the repository; listing the ids does not make it either.
    """

    def __init__(
        self, configured: Mapping[str, Pipeline], builtins: Mapping[str, Callable[[], Pipeline]]
    ) -> None:
        self._configured = dict(configured)
        self._factories = {name: make for name, make in builtins.items() if name not in configured}
        self._made: dict[str, Pipeline] = {}

    def __getitem__(self, pipeline_id: str) -> Pipeline:
        if pipeline_id in self._configured:
            return self._configured[pipeline_id]
        if pipeline_id not in self._made:
            self._made[pipeline_id] = self._factories[pipeline_id]()
        return self._made[pipeline_id]

    def __iter__(self) -> Iterator[str]:
        yield from self._configured
        yield from self._factories

    def __len__(self) -> int:
        return len(self._configured) + len(self._factories)

    def __contains__(self, pipeline_id: object) -> bool:
        return pipeline_id in self._configured or pipeline_id in self._factories


class Config(NamedTuple):
    """The validated config: pipelines (builtin ``diagnostics`` included), settings, tasks.

    ``mirrors`` holds the validated ``tasks.mirrors`` templates, None when the file sets none.
    """

    path: Path | None
    default_pipeline: str | None
    settings: Mapping[str, object]
    pipelines: Mapping[str, Pipeline]
    tasks: Mapping[str, object]
    warnings: tuple[str, ...]
    mirrors: tuple[str, ...] | None = None

    def resolve_pipeline(self, name: str | None) -> Pipeline:
        """Return pipeline ``name`` (None: ``defaultPipeline``, else ``diagnostics``)."""
        if name is None:
            name = self.default_pipeline or BUILTIN_PIPELINE
        pipeline_id = validate_id(name, "pipeline")
        if pipeline_id not in self.pipelines:
            available = ", ".join(self.pipelines)
            hint = did_you_mean(pipeline_id, self.pipelines)
            raise UnknownPipelineError(
                f"unknown pipeline {pipeline_id!r}{hint}{' ' if hint else '; '}available: "
                f"{available} (see: codex-orchestrator pipelines)"
            )
        return self.pipelines[pipeline_id]
