"""Stage graphs: what each stage needs, validation, levels, and the ready-set scheduler.

Pure logic, no I/O (see docs/graphs.md). A pipeline in which no stage has a ``needs`` key is
sequential: each stage implicitly needs the one before it, and the first failure stops the run
as it always has. Once any stage has ``needs``, the pipeline is a graph: each stage waits for
exactly its ``needs`` (absent or empty: none), and a failure skips only what depends on it.
"""

# No `from __future__ import annotations` (docs/architecture.md, cold start): typing would
# compile each NamedTuple/TypedDict field written as a string into a ForwardRef at import.

import heapq
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

from codex_orchestrator.records.statuses import SkipReason

#: ``skip_reason`` of a stage skipped because a stage it needs (directly or not) failed.
NEEDS_FAILED = SkipReason.NEEDS_FAILED


class GraphError(ValueError):
    """A graph problem found by `validate`: the JSON path, what is wrong, and how to fix it."""

    def __init__(self, path: str, problem: str, fix: str) -> None:
        super().__init__(f"{path}: {problem}; {fix}")
        self.path = path
        self.problem = problem
        self.fix = fix


class HasNeeds(Protocol):
    """A stage as the graph sees it: its id and its ``needs`` (None when the key is absent)."""

    @property
    def id(self) -> str: ...

    @property
    def needs(self) -> tuple[str, ...] | None: ...


class StageNode(NamedTuple):
    """A stage to validate, with where it was defined.

    ``path`` is the stage's JSON path; ``via`` the stage-set entry that inserted it, if any.
    """

    id: str
    needs: tuple[str, ...] | None
    path: str
    via: str | None = None


def located_path(path: str, via: str | None, suffix: str) -> str:
    """JSON path of ``suffix`` in a stage at ``path``, naming the stage-set entry ``via``."""
    if via is None:
        return f"{path}{suffix}"
    return f"{via} (stage set entry {path}{suffix})"


def is_graph(stages: Iterable[HasNeeds]) -> bool:
    """True when any stage has a ``needs`` key (else the pipeline runs in order)."""
    return any(stage.needs is not None for stage in stages)


def needs_of(stages: Sequence[HasNeeds]) -> dict[str, tuple[str, ...]]:
    """Each stage's effective needs, in config order (sequential: the previous stage)."""
    if not is_graph(stages):
        ids = [stage.id for stage in stages]
        return {stage_id: tuple(ids[index - 1 : index]) for index, stage_id in enumerate(ids)}
    return {stage.id: stage.needs or () for stage in stages}


def selected_stages(stages: Sequence[HasNeeds], requested: Iterable[str]) -> list[str]:
    """The ids (config order) that ``--only`` ``requested`` runs: those stages and, in a
    graph, every stage they need, directly or not (in order, a stage runs alone).

    A requested id the pipeline does not have is a `ValueError` whose argument is that id."""
    ids = [stage.id for stage in stages]
    wanted: set[str] = set()
    pending = list(requested)
    for stage_id in pending:
        if stage_id not in ids:
            raise ValueError(stage_id)
    graph = needs_of(stages) if is_graph(stages) else {}
    while pending:
        stage_id = pending.pop()
        if stage_id not in wanted:
            wanted.add(stage_id)
            pending += graph.get(stage_id, ())
    return [stage_id for stage_id in ids if stage_id in wanted]


def validate(nodes: Sequence[StageNode], elsewhere: Mapping[str, str]) -> None:
    """Raise `GraphError` for the first bad ``needs``: unknown id, itself, repeated, a cycle.

    ``elsewhere`` maps stage ids of other pipelines to their pipeline, so that naming one gets
    its own hint (``needs`` only reaches stages of the same pipeline).
    """
    known = {node.id for node in nodes}
    for node in nodes:
        seen: set[str] = set()
        for position, need in enumerate(node.needs or ()):
            where = located_path(node.path, node.via, f".needs[{position}]")
            if need == node.id:
                raise GraphError(
                    where, f"stage {node.id!r} needs itself", "remove it from its own needs"
                )
            if need in seen:
                raise GraphError(where, f"{need!r} is listed twice", "list each stage once")
            if need not in known:
                fix = _unknown_fix(need, known, elsewhere)
                raise GraphError(where, f"unknown stage {need!r} in needs", fix)
            seen.add(need)
    _check_acyclic(nodes)


def _unknown_fix(need: str, known: set[str], elsewhere: Mapping[str, str]) -> str:
    if need in elsewhere:
        return (
            f"{need!r} is a stage of pipeline {elsewhere[need]!r}, and needs can only name "
            "stages of the same pipeline; run that pipeline as a subpipeline stage and need it"
        )
    return f"name a stage of this pipeline: {', '.join(sorted(known))}"


def _check_acyclic(nodes: Sequence[StageNode]) -> None:
    """Depth-first search in config order; the first cycle found is reported ``a -> b -> a``.

    Iterative, so that a long chain of stages cannot exhaust the interpreter's recursion limit.
    """
    by_id = {node.id: node for node in nodes}
    finished: set[str] = set()
    for start in nodes:
        if start.id in finished:
            continue
        chain = [start.id]
        on_chain = {start.id}
        unexplored = [iter(enumerate(start.needs or ()))]
        while unexplored:
            step = next(unexplored[-1], None)
            if step is None:
                unexplored.pop()
                done = chain.pop()
                on_chain.discard(done)
                finished.add(done)
                continue
            position, need = step
            if need in on_chain:
                node = by_id[chain[-1]]
                cycle = " -> ".join([*chain[chain.index(need) :], need])
                raise GraphError(
                    located_path(node.path, node.via, f".needs[{position}]"),
                    f"cycle {cycle}",
                    "remove one of these needs",
                )
            if need not in finished:
                chain.append(need)
                on_chain.add(need)
                unexplored.append(iter(enumerate(by_id[need].needs or ())))


def levels(stages: Sequence[HasNeeds]) -> list[list[str]]:
    """Stages grouped by depth: level 0 needs nothing, level k needs something at level k-1.

    Stages keep config order within a level. The graph must be valid (see `validate`).
    """
    needs = needs_of(stages)
    depth: dict[str, int] = {}

    def depth_of(stage_id: str) -> int:
        pending = [stage_id]
        while pending:
            current = pending[-1]
            missing = [need for need in needs[current] if need not in depth]
            if missing:
                pending.extend(missing)
                continue
            pending.pop()
            depth[current] = 1 + max((depth[need] for need in needs[current]), default=-1)
        return depth[stage_id]

    grouped: dict[int, list[str]] = {}
    for stage in stages:
        grouped.setdefault(depth_of(stage.id), []).append(stage.id)
    return [grouped[level] for level in sorted(grouped)]


class Skip(NamedTuple):
    """A stage that will not run because ``failed`` (a stage it needs, maybe transitively) failed."""

    stage_id: str
    failed: str


class Scheduler:
    """The ready set: which stages may start now, and which are skipped by a failure.

    At most ``max_parallel`` stages run at once. A failure in a graph skips every stage that
    needs the failed one, directly or transitively (see `Skip`); other branches go on unless
    ``fail_fast``. In a sequential pipeline the first failure halts it (later stages stay
    pending, as they always have). ``done`` names stages that already succeeded or were skipped
    (a resumed run). One caller owns a scheduler: the runner's main flow.

    Each event costs time in proportion to the stages it touches, not to the pipeline's length:
    a count of unmet needs per stage, and a heap (by config position) of stages ready to start.
    """

    def __init__(
        self,
        stages: Sequence[HasNeeds],
        max_parallel: int,
        *,
        fail_fast: bool = False,
        done: Iterable[str] = (),
    ) -> None:
        self._order = [stage.id for stage in stages]
        self._needs = needs_of(stages)
        self._graph = is_graph(stages)
        self._max_parallel = max(1, max_parallel)
        self._fail_fast = fail_fast
        self._dependents: dict[str, list[str]] = {stage_id: [] for stage_id in self._order}
        for stage_id, needs in self._needs.items():
            for need in needs:
                self._dependents[need].append(stage_id)
        self._ended: dict[str, bool] = dict.fromkeys(done, True)
        self._running: set[str] = set()
        self._position = {stage_id: position for position, stage_id in enumerate(self._order)}
        self._unmet = {
            stage_id: sum(self._ended.get(need) is not True for need in needs)
            for stage_id, needs in self._needs.items()
        }
        self._ready = [
            self._position[stage_id]
            for stage_id, unmet in self._unmet.items()
            if unmet == 0 and stage_id not in self._ended
        ]
        heapq.heapify(self._ready)
        self.first_failure: str | None = None
        self.halted = False

    @property
    def running(self) -> frozenset[str]:
        """The stages started and not yet finished."""
        return frozenset(self._running)

    def pending(self) -> list[str]:
        """Stages neither started nor ended, in config order."""
        return [stage_id for stage_id in self._order if self._is_pending(stage_id)]

    def _is_pending(self, stage_id: str) -> bool:
        return stage_id not in self._ended and stage_id not in self._running

    def start_ready(self) -> list[str]:
        """Mark as running, and return in config order, the stages that may start now."""
        if self.halted:
            return []
        ready: list[str] = []
        while self._ready and len(self._running) + len(ready) < self._max_parallel:
            stage_id = self._order[heapq.heappop(self._ready)]
            if self._is_pending(stage_id):
                ready.append(stage_id)
        self._running.update(ready)
        return ready

    def finish(self, stage_id: str, succeeded: bool, *, skip_dependents: bool = True) -> list[Skip]:
        """Record the end of a running stage; return the stages its failure skips.

        ``succeeded`` is True for a stage that succeeded or was skipped (tool missing, allowed
        failure): its dependents may start. A stage ended by the run stopping (a signal,
        failFast) does not skip its dependents (``skip_dependents=False``): like every stage
        that never started in a stopped run, they stay pending.
        """
        self._running.discard(stage_id)
        self._ended[stage_id] = succeeded
        if succeeded:
            for dependent in self._dependents[stage_id]:
                self._unmet[dependent] -= 1
                if self._unmet[dependent] == 0 and self._is_pending(dependent):
                    heapq.heappush(self._ready, self._position[dependent])
            return []
        if self.first_failure is None:
            self.first_failure = stage_id
        if self._fail_fast or not self._graph:
            self.halted = True
        return self._skip_dependents(stage_id) if self._graph and skip_dependents else []

    def halt(self) -> None:
        """Start nothing more (the run is being cancelled); running stages may still finish."""
        self.halted = True

    def _skip_dependents(self, failed: str) -> list[Skip]:
        skipped: set[str] = set()
        frontier = [failed]
        while frontier:
            for dependent in self._dependents[frontier.pop()]:
                if self._is_pending(dependent):
                    self._ended[dependent] = False
                    skipped.add(dependent)
                    frontier.append(dependent)
        return [
            Skip(stage_id, failed) for stage_id in sorted(skipped, key=self._position.__getitem__)
        ]


def resolve_max_parallel(pipeline_value: int | None, configured: int | None) -> int:
    """How many stages may run at once: the pipeline's ``maxParallel``, else the configured
    value (``--max-parallel``, else env, else the ``max_parallel`` setting), else the CPU count.
    """
    return pipeline_value or configured or os.cpu_count() or 1


class GraphView(NamedTuple):
    """The graph as ``plan`` shows it: may stages run at once, the bound, the level order."""

    parallel: bool
    max_parallel: int
    fail_fast: bool
    levels: list[list[str]]

    @classmethod
    def of(cls, stages: Sequence[HasNeeds], max_parallel: int, fail_fast: bool) -> "GraphView":
        """Describe ``stages`` run with at most ``max_parallel`` at once."""
        return cls(is_graph(stages), max_parallel, fail_fast, levels(stages))

    def text_lines(self) -> list[str]:
        """Text lines for the level order (none for a sequential pipeline)."""
        if not self.parallel:
            return []
        fail_fast = ", failFast" if self.fail_fast else ""
        lines = [f"  levels (at most {self.max_parallel} stages at once{fail_fast}):"]
        for number, level in enumerate(self.levels, start=1):
            lines.append(f"    {number}. {', '.join(level)}")
        return lines
