"""The stage cache in a run (docs/cache.md): look a stage up before it would run, replay a
hit, store a clean success.

`RunCache` is one run's use of the cache. The runner asks it, in the main flow, just before
a command stage would start: `lookup` fingerprints the stage and returns the verified `Hit`
(no process is then started: `replay` writes the original logs and outputs) or None (the
stage runs, its manifest entry carries the miss and why). After the stage ends `succeeded`
(exit 0, not timed out, not cancelled, not an ``allowFailure`` pass), `stored` fingerprints
it again and stores the entry only when nothing the key covers moved while it ran. Nothing
here can fail a run: a cache that cannot be read or written is a miss or a ``not stored``
with one warning line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from codex_orchestrator.errors import EXIT_USAGE, OrchestratorError
from codex_orchestrator.pipelines.graph import is_graph, levels
from codex_orchestrator.pipelines.model import CommandStage, Config, Pipeline
from codex_orchestrator.records.cache_field import cache_field, cache_of
from codex_orchestrator.records.layout import CONFIG_FILE
from codex_orchestrator.records.statuses import CacheStatus
from codex_orchestrator.records.workspace import Settings, Workspace
from codex_orchestrator.util.console import note

if TYPE_CHECKING:  # the cache's machinery is imported by runs with a cached stage only
    from codex_orchestrator.cache.key import Fingerprint
    from codex_orchestrator.cache.location import OpenCache
    from codex_orchestrator.cache.store import Hit

#: Why a stage with ``cache`` missed when lookups are off for this run.
NO_CACHE_REASON = "--no-cache"
OFF_REASON = "the cache setting is false"
#: The "key" of a needed stage that is skipped because it cannot run here (stable: it
#: produced nothing).
SKIPPED_NEED = "skipped"


class _Looked(NamedTuple):
    """What the lookup of a stage found, kept until the stage ends."""

    fingerprint: Fingerprint | None  # None: caching is off
    environ: Mapping[str, str]
    needs: Mapping[str, str]
    field: dict[str, Any]
    entry_exists: bool = False  # a verified entry that could not be served


class RunCache:
    """One run's use of the stage cache (main flow only).

    ``reads`` false (``--no-cache``): every stage runs, and clean successes are still stored.
    ``read_only`` (``plan``): lookups only; nothing is ever written. ``done`` are the run's stage entries already done (a resumed run): their keys stand for
    them in the keys of the stages that need them.
    """

    def __init__(
        self,
        workspace: Workspace,
        config_settings: Mapping[str, object],
        settings: Settings,
        pipeline: Pipeline,
        run_id: str,
        task_id: str,
        *,
        reads: bool = True,
        read_only: bool = False,
        done: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.workspace = workspace
        self.config_settings = config_settings
        self.enabled = settings.cache
        self.reads = reads
        self.read_only = read_only
        self.pipeline = pipeline
        self.run_id = run_id
        self.task_id = task_id
        self._open: OpenCache | None = None
        self._looked: dict[int, _Looked] = {}
        # Consecutive hits of a sequential pipeline, while no restore wrote an output, share
        # one snapshot of the tree (docs/cache.md); a stage that runs ends it. A graph runs
        # stages in other threads while the next is looked up: it never keeps one.
        self._snapshot = contextlib.ExitStack()
        self._snapshots = not is_graph(pipeline.stages)
        self._in_snapshot = False
        self.keys: dict[str, str] = {}
        for entry in done:
            field = cache_of(entry)
            if field is not None and isinstance(field.get("key"), str):
                self.keys[str(entry["id"])] = field["key"]

    @property
    def cache(self) -> OpenCache:
        """The workspace's cache, opened on first use (runs without ``cache`` never open it)."""
        if self._open is None:
            from codex_orchestrator.cache.location import open_cache

            self._open = open_cache(self.workspace, self.config_settings, read_only=self.read_only)
        return self._open

    def __enter__(self) -> RunCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._end_snapshot()

    def stage_runs(self) -> None:
        """A stage is about to run (and may write under the root): the next lookup looks
        at the tree again."""
        self._end_snapshot()

    def _end_snapshot(self) -> None:
        self._snapshot.close()
        self._in_snapshot = False

    def skipped(self, stage_id: str) -> None:
        """``stage_id`` is skipped because it cannot run here: stages that need it may hit."""
        self.keys[stage_id] = SKIPPED_NEED

    def lookup(self, index: int, stage: CommandStage, environ: Mapping[str, str]) -> Hit | None:
        """Look the stage up before its first attempt; the hit to replay, or None (run it).

        ``environ`` is the environment the stage would run with.
        """
        if stage.cache is None or index in self._looked:
            self.stage_runs()
            return None
        if not self.enabled:
            self._looked[index] = _Looked(
                None, environ, {}, cache_field(CacheStatus.OFF, None, OFF_REASON)
            )
            return None
        needs = {need: self.keys.get(need, f"run {self.run_id}") for need in stage.needs or ()}
        if self._snapshots and not self._in_snapshot:
            self._snapshot.enter_context(self.cache.fingerprinter.snapshot())
            self._in_snapshot = True
        fingerprint = self._fingerprint(stage, environ, needs)
        self.keys[stage.id] = fingerprint.key
        hit: Hit | None = None
        if not self.reads:
            reason = NO_CACHE_REASON
        else:
            from codex_orchestrator.cache.store import Hit

            result = self.cache.store.lookup(self._identity(stage), fingerprint)
            if isinstance(result, Hit):
                hit, reason = result, ""
            else:
                reason = result.reason
        field = cache_field(CacheStatus.MISS, fingerprint.key, reason)
        self._looked[index] = _Looked(fingerprint, environ, needs, field)
        if hit is None:
            self.stage_runs()
        return hit

    def field(self, index: int) -> dict[str, Any] | None:
        """The ``cache`` field of a stage about to run (None: the stage has no cache)."""
        looked = self._looked.get(index)
        return dict(looked.field) if looked is not None else None

    def plan(self) -> dict[str, dict[str, Any]]:
        """What a run would find now, per cached stage id (``plan``: reads only).

        A hit's field is the one its stage entry would get; a miss names why.
        """
        stages = self.pipeline.stages
        order = [stage_id for level in levels(stages) for stage_id in level]
        by_id = {stage.id: (index, stage) for index, stage in enumerate(stages, start=1)}
        found: dict[str, dict[str, Any]] = {}
        self._snapshots = False  # nothing runs: one snapshot serves every lookup, misses too
        with contextlib.ExitStack() as stack:
            for stage_id in order:
                index, stage = by_id[stage_id]
                if not isinstance(stage, CommandStage) or stage.cache is None:
                    continue
                if stage.unavailable_reason() is not None:
                    self.skipped(stage_id)
                    continue
                if self.enabled and not found:
                    stack.enter_context(self.cache.fingerprinter.snapshot())
                hit = self.lookup(index, stage, {**os.environ, **stage.env})
                found[stage_id] = self._planned(index, hit)
        return found

    def _planned(self, index: int, hit: Hit | None) -> dict[str, Any]:
        """What `plan` shows for stage ``index``: a hit that a run would refuse to restore is
        the miss the run would record."""
        if hit is None:
            return self._looked[index].field
        from codex_orchestrator.cache.errors import RestoreRefused

        try:
            self.cache.store.check_restore(hit)
        except RestoreRefused as error:
            return {**self._looked[index].field, "reason": error.reason}
        return _hit_field(hit)

    def replay(self, index: int, hit: Hit, stdout: Path, stderr: Path) -> dict[str, Any] | None:
        """Restore ``hit`` into stage ``index``'s log paths and its outputs under the root: the
        stage entry's ``cache`` field, or None when it cannot be served (the stage then runs,
        its miss says why; whatever was written to the log paths is removed)."""
        from codex_orchestrator.cache.errors import CorruptEntryError, RestoreRefused

        try:
            if self.cache.store.restore(hit, stdout=stdout, stderr=stderr):
                self._end_snapshot()  # outputs were written under the root
        except (CorruptEntryError, RestoreRefused, OSError) as error:
            self._end_snapshot()
            for path in (stdout, stderr):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            looked = self._looked[index]
            if isinstance(error, CorruptEntryError):
                looked.field["reason"] = "entry damaged"
                return None
            if isinstance(error, RestoreRefused):
                note(f"warning: {error}")
                looked.field["reason"] = error.reason
            else:
                looked.field["reason"] = f"cannot restore the entry ({error.strerror or error})"
            # the entry was verified: storing this run's success again could only find it
            self._looked[index] = looked._replace(entry_exists=True)
            return None
        return _hit_field(hit)

    def stored(
        self, index: int, stage: CommandStage, entry: Mapping[str, Any], stdout: Path, stderr: Path
    ) -> dict[str, Any] | None:
        """Store the clean success of stage ``index`` (its manifest ``entry``, its logs); the
        updated ``cache`` field, or None when the stage has no cache."""
        looked = self._looked.get(index)
        if looked is None or looked.fingerprint is None:
            return None
        from codex_orchestrator.cache.errors import CacheStoreError
        from codex_orchestrator.cache.key import explain
        from codex_orchestrator.cache.store import StageRecord

        field = dict(looked.field)
        if looked.entry_exists:
            field.update(store="exists", store_reason=None)
            return field
        before = looked.fingerprint
        after = self._fingerprint(stage, looked.environ, looked.needs)
        if after.key != before.key or after.problem is not None:
            # something the key covers moved while the stage ran: this success proves nothing
            # about either state of the inputs
            moved = after.problem or explain(before, after)
            field.update(store="not stored", store_reason=f"changed while the stage ran: {moved}")
            return field
        record = StageRecord(
            run_id=self.run_id,
            task=self.task_id,
            pipeline=self.pipeline.id,
            stage=stage.id,
            summary=entry.get("summary"),
            duration_seconds=float(entry.get("duration_seconds") or 0.0),
        )
        try:
            outcome = self.cache.store.store(
                self._identity(stage), before, record, stdout=stdout, stderr=stderr
            )
        except (CacheStoreError, OSError) as error:
            message = str(error) if isinstance(error, CacheStoreError) else f"stage cache: {error}"
            note(f"warning: {message}")
            field.update(store="not stored", store_reason=message)
            return field
        reason = before.problem if outcome == "not stored" else None
        field.update(store=outcome, store_reason=reason)
        return field

    def _identity(self, stage: CommandStage) -> str:
        return f"{self.pipeline.id}/{stage.id}"

    def _fingerprint(
        self, stage: CommandStage, environ: Mapping[str, str], needs: Mapping[str, str]
    ) -> Fingerprint:
        assert stage.cache is not None
        from codex_orchestrator.cache.key import stage_fingerprint

        return stage_fingerprint(
            command=stage.command,
            cwd=stage.cwd,
            env=stage.env,
            spec=stage.cache,
            environ=environ,
            needs=needs,
            inputs=self.cache.fingerprinter.inputs(stage.cache),
        )


def _hit_field(hit: Hit) -> dict[str, Any]:
    entry = hit.entry
    return cache_field(
        CacheStatus.HIT,
        hit.key,
        None,
        from_run=entry.from_run,
        from_task=entry.task,
        saved_seconds=round(entry.duration_seconds, 3),
    )


def refuse_remote_outputs(
    workspace: Workspace, config: Config, pipeline: Pipeline, executor: str | None
) -> None:
    """Exit 2 when a stage's ``cache.outputs`` cannot be honoured: with the dask executor (the
    ``executor`` chosen) and a ``worker_root`` that is not this tree, a stage writes its
    outputs on the workers, while the cache (which decides, stores and restores on this
    machine) would read and restore them here. ``outputs: []`` is fine: the logs come back.
    Checked before anything connects."""
    if executor != "dask" or not Settings.resolve(config.settings).cache:
        return
    worker_root = config.settings.get("worker_root")
    # the same tree named through a link is the same tree (a path absent here stays as given)
    if worker_root is None or os.path.realpath(str(worker_root)) == os.path.realpath(
        workspace.root
    ):
        return
    for owner, stage in _command_stages(config, pipeline):
        if stage.cache is not None and stage.cache.outputs:
            raise OrchestratorError(
                f"{CONFIG_FILE}: pipeline {owner}, stage {stage.id}: cache.outputs cannot be "
                f"restored with the dask executor and settings.worker_root {worker_root} (the "
                "stage writes them on the workers, the cache reads them here); remove "
                'cache.outputs (keep "outputs": []), or run this pipeline with --executor local',
                exit_code=EXIT_USAGE,
            )


def _command_stages(config: Config, pipeline: Pipeline) -> list[tuple[str, CommandStage]]:
    """The command stages of ``pipeline`` and of the sub-pipelines it runs, with their
    pipeline's id."""
    found: list[tuple[str, CommandStage]] = []
    pending, seen = [pipeline], {pipeline.id}
    while pending:
        current = pending.pop()
        for stage in current.stages:
            if isinstance(stage, CommandStage):
                found.append((current.id, stage))
            elif stage.pipeline not in seen:
                seen.add(stage.pipeline)
                pending.append(config.pipelines[stage.pipeline])
    return found
