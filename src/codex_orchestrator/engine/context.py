"""What the engine's modules share about a run: its invocation's context, the run being
executed, and how it ended."""

# No `from __future__ import annotations` (docs/architecture.md, cold start): typing would
# compile each NamedTuple/TypedDict field written as a string into a ForwardRef at import.

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from codex_orchestrator.engine.echo import EchoSink
from codex_orchestrator.executors.base import Cancellation, Executor
from codex_orchestrator.pipelines.config import Config, Pipeline
from codex_orchestrator.records.events import EventLog
from codex_orchestrator.records.manifest import ManifestStore
from codex_orchestrator.records.workspace import Settings, Workspace

#: Runs once a run's final records are written, with its run directory (e.g. its HTML report).
AfterFinish = Callable[[Path], None]


class RunContext(NamedTuple):
    """What every run of one invocation shares.

    ``on_output`` (where stage output is echoed, `engine.echo`) and ``after_finish`` are hooks
    the command layer passes in, so that the engine never imports a renderer.
    """

    workspace: Workspace
    config: Config
    settings: Settings
    task_id: str
    task_slug: str
    cancellation: Cancellation
    executor: Executor
    on_output: EchoSink | None = None
    after_finish: AfterFinish | None = None
    #: False (``--no-cache``): stages with ``cache`` run; their clean successes are stored.
    cache_reads: bool = True


class Launch(NamedTuple):
    """What the caller of a run chose beyond the pipeline: ``start --only`` and ``-- ARGS``."""

    only: tuple[str, ...] = ()  # the stage ids asked for (empty: every stage)
    args: tuple[str, ...] = ()  # passed to every stage as ``CODEX_ORCHESTRATOR_ARGS``


class ActiveRun:
    """A run being executed by this process."""

    def __init__(self, store: ManifestStore, pipeline: Pipeline, events: EventLog) -> None:
        self.store = store
        self.pipeline = pipeline
        self.events = events

    @property
    def run_id(self) -> str:
        """The run id."""
        return str(self.store.data["run_id"])

    @property
    def run_dir(self) -> Path:
        """The run directory."""
        return self.store.run_dir


class RunResult(NamedTuple):
    """How a run ended, for the command that started it."""

    run_id: str
    status: str
    status_detail: str | None
    exit_code: int
    run_dir: Path
