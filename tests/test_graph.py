"""Tests for the stage graph: needs resolution, validation, levels and the scheduler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import pytest

from codex_orchestrator.pipelines.graph import (
    GraphError,
    Scheduler,
    Skip,
    StageNode,
    is_graph,
    levels,
    needs_of,
    validate,
)


class S(NamedTuple):
    id: str
    needs: tuple[str, ...] | None = None


def nodes(*specs: tuple[str, tuple[str, ...] | None]) -> list[StageNode]:
    return [
        StageNode(stage_id, needs, f"pipelines[0].stages[{index}]")
        for index, (stage_id, needs) in enumerate(specs)
    ]


def graph_error(stages: Sequence[StageNode], elsewhere: dict[str, str] | None = None) -> str:
    with pytest.raises(GraphError) as caught:
        validate(stages, elsewhere or {})
    return str(caught.value)


DIAMOND = [S("a", ()), S("b", ("a",)), S("c", ("a",)), S("d", ("b", "c"))]


# --- needs resolution ----------------------------------------------------------------------


def test_a_pipeline_without_needs_is_sequential() -> None:
    stages = [S("a"), S("b"), S("c")]

    assert not is_graph(stages)
    assert needs_of(stages) == {"a": (), "b": ("a",), "c": ("b",)}
    assert levels(stages) == [["a"], ["b"], ["c"]]


def test_one_needs_key_makes_a_graph_where_absent_needs_means_none() -> None:
    stages = [S("a"), S("b", ("a",)), S("c")]

    assert is_graph(stages)
    assert needs_of(stages) == {"a": (), "b": ("a",), "c": ()}
    assert levels(stages) == [["a", "c"], ["b"]]


def test_empty_needs_also_makes_a_graph() -> None:
    assert needs_of([S("a"), S("b", ())]) == {"a": (), "b": ()}


def test_levels_of_a_diamond() -> None:
    assert levels(DIAMOND) == [["a"], ["b", "c"], ["d"]]


def test_levels_follow_the_longest_path_and_keep_config_order() -> None:
    stages = [S("z", ("y",)), S("x", ()), S("y", ("x",)), S("w", ("x", "z"))]

    assert levels(stages) == [["x"], ["y"], ["z"], ["w"]]


def test_levels_of_a_long_chain_do_not_recurse() -> None:
    stages = [S("s0", ())] + [S(f"s{i}", (f"s{i - 1}",)) for i in range(1, 3000)]

    assert len(levels(stages)) == 3000


# --- validation ----------------------------------------------------------------------------


def test_a_valid_graph_passes() -> None:
    validate(nodes(("a", ()), ("b", ("a",)), ("c", ("a", "b"))), {})


def test_unknown_id_names_the_json_path_and_the_stages_it_could_name() -> None:
    message = graph_error(nodes(("a", None), ("b", ("a", "nope"))))

    assert message == (
        "pipelines[0].stages[1].needs[1]: unknown stage 'nope' in needs; "
        "name a stage of this pipeline: a, b"
    )


def test_a_stage_of_another_pipeline_gets_its_own_hint() -> None:
    message = graph_error(nodes(("a", ("build",))), {"build": "ci"})

    assert message.startswith("pipelines[0].stages[0].needs[0]: unknown stage 'build' in needs; ")
    assert "'build' is a stage of pipeline 'ci'" in message
    assert "subpipeline" in message


def test_a_stage_that_needs_itself() -> None:
    message = graph_error(nodes(("a", ()), ("b", ("a", "b"))))

    assert message == (
        "pipelines[0].stages[1].needs[1]: stage 'b' needs itself; remove it from its own needs"
    )


def test_a_need_listed_twice() -> None:
    message = graph_error(nodes(("a", ()), ("b", ("a", "a"))))

    assert message.startswith("pipelines[0].stages[1].needs[1]: 'a' is listed twice")


def test_a_two_stage_cycle_is_printed_in_needs_order() -> None:
    message = graph_error(nodes(("a", ("b",)), ("b", ("a",))))

    assert (
        message == "pipelines[0].stages[1].needs[0]: cycle a -> b -> a; remove one of these needs"
    )


def test_a_longer_cycle_behind_a_valid_prefix() -> None:
    message = graph_error(nodes(("start", ()), ("a", ("start", "c")), ("b", ("a",)), ("c", ("b",))))

    assert message == (
        "pipelines[0].stages[2].needs[0]: cycle a -> c -> b -> a; remove one of these needs"
    )


def test_a_stage_set_member_is_named_with_its_entry() -> None:
    stages = [StageNode("a", ("zz",), "stageSets.ci[0]", "pipelines[0].stages[0]")]

    message = graph_error(stages)

    assert message.startswith(
        "pipelines[0].stages[0] (stage set entry stageSets.ci[0].needs[0]): unknown stage 'zz'"
    )


def test_a_long_chain_validates_without_recursion() -> None:
    chain = [("s0", ())] + [(f"s{i}", (f"s{i - 1}",)) for i in range(1, 3000)]

    validate(nodes(*chain), {})


# --- the scheduler -------------------------------------------------------------------------


def test_sequential_pipeline_runs_one_at_a_time_and_halts_on_failure() -> None:
    scheduler = Scheduler([S("a"), S("b"), S("c")], max_parallel=8)

    assert scheduler.start_ready() == ["a"]
    assert scheduler.start_ready() == []
    assert scheduler.finish("a", succeeded=True) == []
    assert scheduler.start_ready() == ["b"]
    assert scheduler.finish("b", succeeded=False) == []
    assert scheduler.start_ready() == []
    assert scheduler.first_failure == "b"
    assert scheduler.pending() == ["c"]
    assert scheduler.running == frozenset()


def test_diamond_runs_the_middle_at_once() -> None:
    scheduler = Scheduler(DIAMOND, max_parallel=4)

    assert scheduler.start_ready() == ["a"]
    scheduler.finish("a", succeeded=True)
    assert scheduler.start_ready() == ["b", "c"]
    scheduler.finish("c", succeeded=True)
    assert scheduler.start_ready() == []
    scheduler.finish("b", succeeded=True)
    assert scheduler.start_ready() == ["d"]
    scheduler.finish("d", succeeded=True)
    assert scheduler.pending() == []
    assert scheduler.first_failure is None


def test_max_parallel_bounds_the_ready_set() -> None:
    scheduler = Scheduler([S(f"s{i}", ()) for i in range(8)], max_parallel=3)

    assert scheduler.start_ready() == ["s0", "s1", "s2"]
    assert scheduler.start_ready() == []
    scheduler.finish("s1", succeeded=True)
    assert scheduler.start_ready() == ["s3"]
    assert scheduler.running == {"s0", "s2", "s3"}


def test_a_failure_skips_its_dependents_transitively_and_other_branches_go_on() -> None:
    stages = [
        S("build", ()),
        S("lint", ("build",)),
        S("package", ("lint",)),
        S("docs", ()),
        S("publish", ("package", "docs")),
    ]
    scheduler = Scheduler(stages, max_parallel=4)

    assert scheduler.start_ready() == ["build", "docs"]
    assert scheduler.finish("build", succeeded=False) == [
        Skip("lint", "build"),
        Skip("package", "build"),
        Skip("publish", "build"),
    ]
    assert scheduler.start_ready() == []
    assert scheduler.running == {"docs"}
    assert scheduler.finish("docs", succeeded=True) == []
    assert scheduler.start_ready() == []
    assert scheduler.pending() == []
    assert scheduler.first_failure == "build"
    assert not scheduler.halted


def test_a_skipped_or_allowed_failure_counts_as_done_for_dependents() -> None:
    scheduler = Scheduler([S("a", ()), S("b", ("a",))], max_parallel=2)

    scheduler.start_ready()
    scheduler.finish("a", succeeded=True)

    assert scheduler.start_ready() == ["b"]


def test_fail_fast_halts_and_later_failures_still_skip_dependents() -> None:
    stages = [S("a", ()), S("b", ()), S("c", ()), S("after-b", ("b",))]
    scheduler = Scheduler(stages, max_parallel=2, fail_fast=True)

    assert scheduler.start_ready() == ["a", "b"]
    scheduler.finish("a", succeeded=False)
    assert scheduler.halted
    assert scheduler.start_ready() == []
    assert scheduler.finish("b", succeeded=False, skip_dependents=False) == []
    assert scheduler.first_failure == "a"
    assert scheduler.pending() == ["c", "after-b"]


def test_halt_starts_nothing_more() -> None:
    scheduler = Scheduler([S("a", ()), S("b", ())], max_parallel=1)

    assert scheduler.start_ready() == ["a"]
    scheduler.halt()
    scheduler.finish("a", succeeded=True)

    assert scheduler.start_ready() == []
    assert scheduler.pending() == ["b"]


def test_resume_starts_from_what_is_done() -> None:
    scheduler = Scheduler(DIAMOND, max_parallel=4, done=["a", "c"])

    assert scheduler.start_ready() == ["b"]
    scheduler.finish("b", succeeded=True)
    assert scheduler.start_ready() == ["d"]


def test_max_parallel_below_one_still_runs_one() -> None:
    scheduler = Scheduler([S("a", ()), S("b", ())], max_parallel=0)

    assert scheduler.start_ready() == ["a"]


def test_a_long_sequence_is_scheduled_in_order() -> None:
    stages = [S(f"s{i}") for i in range(3000)]
    scheduler = Scheduler(stages, max_parallel=4)
    started = []
    while ready := scheduler.start_ready():
        started += ready
        for stage_id in ready:
            scheduler.finish(stage_id, succeeded=True)

    assert started == [stage.id for stage in stages]


def test_ready_stages_start_in_config_order_whatever_order_they_became_ready() -> None:
    stages = [S("a", ()), S("b", ()), S("late", ("b",)), S("early", ("a",)), S("free", ())]
    scheduler = Scheduler(stages, max_parallel=2)

    assert scheduler.start_ready() == ["a", "b"]
    scheduler.finish("b", succeeded=True)
    scheduler.finish("a", succeeded=True)
    assert scheduler.start_ready() == ["late", "early"]
    scheduler.finish("early", succeeded=True)
    assert scheduler.start_ready() == ["free"]
