"""Sampler invariants, checked with hypothesis over random runs for every sampler kind.

A run is driven the way the engine drives it: selections are made ahead (several in flight), some are
cancelled, the others produce a child (evaluated or failed/rejected) that is observed in `seq` order.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import FeatureAxis, SamplerSpec
from kubevolve.loop.sample import (
    MapElitesSampler,
    Sampler,
    Selection,
    UCB1Sampler,
    is_candidate,
    make_sampler,
)
from kubevolve.loop.sample.elite_pool import pool_capacity
from kubevolve.loop.sample.map_elites import cell_of

KINDS = ["ucb1", "greedy", "random", "map_elites"]
POOLED = {"ucb1", "greedy"}  # kinds that select from the best pool_capacity(spec) candidates
BAD_STAGES = [Stage.FAILED_QUICK, Stage.FAILED_FULL, Stage.REJECTED_STATIC, Stage.REJECTED_NOVELTY]
FAST = settings(max_examples=50, deadline=None)

# -- strategies -----------------------------------------------------------------------------------------

scores = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e6, 1e6, allow_nan=False))
stages = st.sampled_from([Stage.EVALUATED] * 3 + BAD_STAGES)
xs = st.one_of(st.none(), st.floats(-0.5, 1.5, allow_nan=False))  # outside [0, 1] too; None: no metric


@st.composite
def specs(draw, kind=None):
    return SamplerSpec(
        kind=kind or draw(st.sampled_from(KINDS)),
        num_parents=draw(st.integers(1, 3)),
        num_inspirations=draw(st.integers(0, 4)),
        exploration=draw(st.floats(0, 2)),
        islands=draw(st.integers(1, 4)),
        migration_interval=draw(st.integers(1, 5)),
        archive_size=draw(st.integers(1, 6)),
    )


features_st = st.sampled_from(
    [
        [],
        [FeatureAxis(name="x", min=0, max=1, bins=3)],
        [FeatureAxis(name="x", min=0, max=1, bins=4), FeatureAxis(name="score", min=-2, max=2, bins=2)],
    ]
)
# one step of the engine: (action, pick, score, stage, x); action 0 select, 1 store a child, 2 cancel
steps_st = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 99), scores, stages, xs), max_size=60)
roots_st = st.lists(st.tuples(scores, stages, xs), min_size=1, max_size=3)

# -- driving a run --------------------------------------------------------------------------------------


def make_node(k: int, score: float, stage: Stage, x: float | None, **kw) -> Node:
    evaluated = stage is Stage.EVALUATED
    return Node(
        run_id="r",
        code="pass\n" * (k % 7),
        id=f"n{k}",
        seq=k,
        score=score if evaluated else None,
        stage=stage,
        metrics={} if x is None else {"x": x},
        **kw,
    )


@dataclass
class Run:
    """The engine's side of a run: stored nodes, selections in flight, every selection made."""

    sampler: Sampler
    nodes: list[Node] = field(default_factory=list)
    in_flight: list[Selection] = field(default_factory=list)
    log: list[tuple] = field(default_factory=list)

    def store(self, node: Node) -> None:
        self.nodes.append(node)
        self.sampler.observe(node)

    def select(self) -> Selection | None:
        selection = self.sampler.select()
        if selection is not None:
            self.in_flight.append(selection)
            self.log.append(signature(selection))
        return selection

    def finish(self, pick: int, score: float, stage: Stage, x: float | None) -> None:
        selection = self.in_flight.pop(pick % len(self.in_flight))
        parent_ids = [p.id for p in selection.parents]
        island = self.sampler.island_for_child(selection)
        self.store(make_node(len(self.nodes), score, stage, x, parent_ids=parent_ids, island=island))

    def cancel(self, pick: int) -> None:
        self.sampler.cancel(self.in_flight.pop(pick % len(self.in_flight)))

    def settle(self) -> None:
        """Cancel whatever is still in flight."""
        while self.in_flight:
            self.cancel(0)


def signature(selection: Selection) -> tuple:
    return ([p.id for p in selection.parents], [n.id for n in selection.inspirations], selection.island)


def drive(spec, features, seed, roots, steps, check=None) -> Run:
    run = Run(make_sampler(spec, features, seed))
    for score, stage, x in roots:
        run.store(make_node(len(run.nodes), score, stage, x))
    for action, pick, score, stage, x in steps:
        if action == 0:
            selection = run.select()
            if check and selection:
                check(run, selection)
        elif action == 1 and run.in_flight:
            run.finish(pick, score, stage, x)
        elif action == 2 and run.in_flight:
            run.cancel(pick)
    return run


def check_selection(run: Run, selection: Selection) -> None:
    spec = run.sampler.spec
    candidates = {n.id: n for n in run.nodes if is_candidate(n)}
    parents = [p.id for p in selection.parents]
    inspirations = [n.id for n in selection.inspirations]
    assert all(pid in candidates for pid in parents + inspirations), "selected a node that is not a candidate"
    assert all(candidates[n.id] is n for n in selection.parents + selection.inspirations)
    assert len(set(parents)) == len(parents) and len(set(inspirations)) == len(inspirations)
    assert not set(parents) & set(inspirations)
    assert 1 <= len(parents) <= spec.num_parents and len(inspirations) <= spec.num_inspirations
    available = len(candidates)
    if spec.kind in POOLED:
        available = min(available, pool_capacity(spec))
    if spec.kind == "map_elites":  # at least the island's own candidates (roots seed every island)
        own = [n for n in candidates.values() if not n.parent_ids or n.island == selection.island]
        assert len(parents) >= min(spec.num_parents, len(own))
    else:
        assert len(parents) == min(spec.num_parents, available)
        assert len(inspirations) == min(spec.num_inspirations, available - len(parents))


# -- every kind -----------------------------------------------------------------------------------------


def every_kind(test):
    """A property over random runs, once per sampler kind (each kind gets its own 50 examples)."""
    strategies = dict(data=st.data(), features=features_st, seed=st.integers(0, 2**32))
    return pytest.mark.parametrize("kind", KINDS)(
        FAST(given(**strategies, roots=roots_st, steps=steps_st)(test))
    )


@every_kind
def test_selections_are_distinct_candidates_in_bounds(kind, data, features, seed, roots, steps):
    spec = data.draw(specs(kind))
    run = drive(spec, features, seed, roots, steps, check=check_selection)
    if isinstance(run.sampler, MapElitesSampler):
        check_islands_bounded(run.sampler)
    if kind in POOLED:  # the pool is exactly the best candidates, ties to the earliest
        ranked = sorted((n for n in run.nodes if is_candidate(n)), key=lambda n: (-n.score, n.seq))
        assert set(run.sampler.pool) == {n.id for n in ranked[: pool_capacity(spec)]}


@every_kind
def test_same_seed_and_calls_give_same_selections(kind, data, features, seed, roots, steps):
    spec = data.draw(specs(kind))
    first = drive(spec, features, seed, roots, steps)
    second = drive(spec, features, seed, roots, steps)
    assert first.log == second.log


@every_kind
def test_replayed_sampler_selects_like_the_live_one(kind, data, features, seed, roots, steps):
    spec = data.draw(specs(kind))
    live = drive(spec, features, seed, roots, steps)
    live.settle()
    replayed = make_sampler(spec, features, seed)
    for node in live.nodes:
        replayed.observe(node)
    for _ in range(3):  # and the state stays identical after further selections
        a, b = live.sampler.select(), replayed.select()
        assert (a and signature(a)) == (b and signature(b))


@FAST
@given(specs(), features_st, st.lists(st.tuples(scores, st.sampled_from(BAD_STAGES), xs), max_size=4))
def test_no_candidate_selects_none(spec, features, roots):
    sampler = make_sampler(spec, features, 0)
    assert sampler.select() is None
    for k, (score, stage, x) in enumerate(roots):
        sampler.observe(make_node(k, score, stage, x))
    assert sampler.select() is None


def test_factory_builds_every_kind():
    for kind in KINDS:
        sampler = make_sampler(SamplerSpec(kind=kind), [], 1)
        assert sampler.spec.kind == kind


# -- greedy ---------------------------------------------------------------------------------------------


def test_greedy_takes_the_best_with_ties_to_the_earliest():
    spec = SamplerSpec(kind="greedy", num_parents=1, num_inspirations=2, archive_size=3)
    sampler = make_sampler(spec, [], 0)
    for k, score in enumerate([1.0, 2.0, 1.0, 2.0, 1.0, 0.0]):
        sampler.observe(make_node(k, score, Stage.EVALUATED, None))
    assert set(sampler.pool) == {"n0", "n1", "n3"}
    assert signature(sampler.select()) == (["n1"], ["n3", "n0"], 0)
    assert signature(sampler.select()) == (["n1"], ["n3", "n0"], 0)  # greedy ignores visits


# -- UCB1 -----------------------------------------------------------------------------------------------


def ucb1(n_candidates: int, scores_: list[float] | None = None, **spec_kw) -> UCB1Sampler:
    sampler = make_sampler(SamplerSpec(kind="ucb1", num_inspirations=0, **spec_kw), [], 0)
    assert isinstance(sampler, UCB1Sampler)
    for k in range(n_candidates):
        sampler.observe(make_node(k, scores_[k] if scores_ else float(k), Stage.EVALUATED, None))
    return sampler


@FAST
@given(st.lists(scores, min_size=2, max_size=8))
def test_ucb1_explores_every_unvisited_candidate(scores_):
    sampler = ucb1(len(scores_), scores_)
    chosen = {sampler.select().parents[0].id for _ in range(200)}  # in flight: visits accumulate
    assert chosen == {f"n{k}" for k in range(len(scores_))}


def test_ucb1_explores_a_new_candidate_beside_a_well_visited_best():
    sampler = ucb1(0)
    sampler.observe(make_node(0, 10.0, Stage.EVALUATED, None))
    for k in range(1, 30):  # the best has 29 children, all failed
        sampler.observe(make_node(k, 0.0, Stage.FAILED_QUICK, None, parent_ids=["n0"]))
    sampler.observe(make_node(30, 0.0, Stage.EVALUATED, None, parent_ids=["n0"]))
    assert sampler.select().parents[0].id == "n30"


def test_ucb1_in_flight_visits_spread_proposals():
    sampler = ucb1(3, [1.0, 1.0, 1.0])
    ahead = [sampler.select() for _ in range(3)]
    assert sorted(s.parents[0].id for s in ahead) == ["n0", "n1", "n2"]
    # without holding visits (each selection cancelled) the same parent comes back every time
    repeated = set()
    for _ in range(3):
        selection = sampler.select()
        repeated.add(selection.parents[0].id)
        sampler.cancel(selection)
    assert len(repeated) == 1


def visit_state(sampler: UCB1Sampler) -> tuple:
    return {n: sampler.visits.visits(n) for n in sampler.pool}, sampler.visits.total, sampler.visits.pending


@FAST
@given(st.lists(scores, min_size=1, max_size=8), st.integers(1, 3), st.integers(0, 5))
def test_ucb1_cancel_restores_visit_counts(scores_, num_parents, ahead):
    sampler = ucb1(len(scores_), scores_, num_parents=num_parents)
    for _ in range(ahead):
        sampler.select()
    before = visit_state(sampler)
    first = sampler.select()
    assert sum(sampler.visits.visits(p.id) for p in first.parents) > 0
    sampler.cancel(first)
    sampler.cancel(first)  # twice is harmless
    after = visit_state(sampler)
    assert after == before
    assert signature(sampler.select()) == signature(first)


# -- MAP-Elites -----------------------------------------------------------------------------------------


def check_islands_bounded(sampler: MapElitesSampler) -> None:
    cells = math.prod(axis.bins for axis in sampler.features)
    assert len(sampler.islands) == sampler.spec.islands
    for island in sampler.islands:
        assert len(island.grid) == len(island.cells) <= cells
        assert len(island.archive) <= pool_capacity(sampler.spec)
        for cell in island.grid:
            assert all(0 <= b < axis.bins for b, axis in zip(cell, sampler.features, strict=True))


@FAST
@given(
    st.integers(2, 4),
    st.integers(1, 5),
    st.lists(st.tuples(st.integers(0, 3), scores, stages, xs), min_size=1, max_size=40),
)
def test_map_elites_ring_migration_every_interval(islands, interval, children):
    """Against a model: an island holds its roots, its own children, and what migrated into it."""
    spec = SamplerSpec(kind="map_elites", islands=islands, migration_interval=interval, archive_size=1000)
    sampler = make_sampler(spec, [FeatureAxis(name="x", min=0, max=1, bins=3)], 0)
    members: list[dict[str, tuple[float, int]]] = [{} for _ in range(islands)]  # id -> (score, -order)
    candidates = 0
    nodes = [make_node(0, 0.0, Stage.EVALUATED, 0.5)] + [
        make_node(k + 1, score, stage, x, parent_ids=["n0"], island=i % islands)
        for k, (i, score, stage, x) in enumerate(children)
    ]
    by_id = {node.id: node for node in nodes}
    for order, node in enumerate(nodes):
        sampler.observe(node)
        if not is_candidate(node):
            continue
        for i in range(islands) if not node.parent_ids else [node.island]:
            members[i][node.id] = (node.score, -order)
        candidates += 1
        if candidates % interval == 0:
            bests = [max(m.items(), key=lambda item: item[1]) for m in members]
            for i in range(islands):
                members[i].setdefault(*bests[i - 1])
        assert sampler.migrations == candidates // interval
        assert [set(island.archive) for island in sampler.islands] == [set(m) for m in members]
        check_islands_bounded(sampler)
        for island, ids in zip(sampler.islands, members, strict=True):  # each cell keeps its best node
            best: dict[tuple, float] = {}
            for node in (by_id[i] for i in ids):
                if (cell := cell_of(node, sampler.features)) is not None:
                    best[cell] = max(best.get(cell, -math.inf), node.score)
            assert {cell: node.score for cell, node in island.grid.items()} == best


def test_map_elites_roots_seed_every_island_and_selection_rotates():
    spec = SamplerSpec(kind="map_elites", islands=3, num_inspirations=0)
    sampler = make_sampler(spec, [FeatureAxis(name="x", min=0, max=1, bins=4)], 0)
    sampler.observe(make_node(0, 1.0, Stage.EVALUATED, 0.5))
    assert all("n0" in island.archive for island in sampler.islands)
    assert [sampler.select().island for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_map_elites_places_nodes_without_features_in_the_archive_only():
    spec = SamplerSpec(kind="map_elites", islands=1)
    sampler = make_sampler(spec, [FeatureAxis(name="x", min=0, max=1, bins=4)], 0)
    sampler.observe(make_node(0, 1.0, Stage.EVALUATED, None))
    sampler.observe(make_node(1, 0.0, Stage.EVALUATED, 7.0, parent_ids=["n0"]))  # clamped into the top bin
    island = sampler.islands[0]
    assert set(island.archive) == {"n0", "n1"}
    assert {cell: node.id for cell, node in island.grid.items()} == {(3,): "n1"}
    assert sampler.select().parents[0].id == "n1"  # the parent comes from an occupied cell


def deceptive_score(x: float) -> float:
    """A local peak at x=0.2 that greedy climbs first; the global peak at x=1 is across a valley."""
    return max(1 - 3 * abs(x - 0.2), 6 * (x - 0.75))


def distinct_parent_bins(kind: str, seed: int, selections: int = 300, bins: int = 10) -> int:
    axis = FeatureAxis(name="x", min=0, max=1, bins=bins)
    spec = SamplerSpec(kind=kind, islands=2, migration_interval=10, num_inspirations=0)
    sampler = make_sampler(spec, [axis], seed)
    mutate = random.Random(3)
    run = Run(sampler)
    run.store(make_node(0, deceptive_score(0.05), Stage.EVALUATED, 0.05))
    parent_bins = set()
    for _ in range(selections):
        parent = run.select().parents[0]
        x = parent.metrics["x"]
        parent_bins.add(min(int(x * bins), bins - 1))
        child_x = min(max(x + mutate.gauss(0, 0.1), 0.0), 1.0)
        run.finish(0, deceptive_score(child_x), Stage.EVALUATED, child_x)
    return len(parent_bins)


def test_map_elites_keeps_diversity_that_greedy_loses():
    seeds = range(8)  # over several runs: one run's count moves by a bin or two with its random stream
    greedy = [distinct_parent_bins("greedy", seed) for seed in seeds]
    map_elites = [distinct_parent_bins("map_elites", seed) for seed in seeds]
    assert max(greedy) <= 4
    assert statistics.mean(map_elites) >= 8.5 and min(map_elites) >= max(greedy) + 3


def test_ranking_an_unscored_node_names_it():
    """Samplers rank only scored nodes; one without a score is an error that names it, not a None comparison."""
    scored, unscored = Node(run_id="r", code="", score=0.5), Node(run_id="r", code="", id="n-unscored")
    assert scored.ranked_score() == 0.5
    with pytest.raises(ValueError, match="n-unscored has no score to rank"):
        unscored.ranked_score()
