"""The pacer's in-flight bound: every slot filled at the start, Little's law in a steady state, more proposals
when many are rejected, and a wake-up when the next evaluation comes within a proposal time of its end."""

from __future__ import annotations

import math

import pytest

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.loop.pacing import MAX_PER_SLOT, Estimate, Pacer, buffer_for, initial_children


def steady(pacer: Pacer, latency: float, evaluation: float, samples: int = 20) -> None:
    for _ in range(samples):
        pacer.proposed(latency, evaluated=True)
        pacer.evaluated(evaluation)


def staggered(slots: int, evaluation: float, now: float) -> list[float]:
    """Start times of `slots` evaluations spread evenly over one evaluation time: a steady state."""
    return [now - evaluation * i / slots for i in range(slots)]


def test_before_any_measure_every_idle_slot_gets_a_proposal_plus_the_buffer():
    pacer = Pacer(16)
    assert pacer.buffer == buffer_for(16) == 3
    assert pacer.wanted(16, [], now=0.0) == 19
    # evaluations running and nothing measured: each may end at once, so each counts
    assert pacer.wanted(0, [0.0] * 16, now=0.0) == 19


@pytest.mark.parametrize(
    ("slots", "latency", "evaluation"),
    [(16, 1.0, 4.0), (8, 1.0, 2.0), (4, 0.5, 2.0), (8, 2.0, 2.0), (4, 2.0, 1.0), (8, 4.0, 2.0)],
)
def test_steady_state_keeps_little_laws_count_in_flight(slots, latency, evaluation):
    pacer = Pacer(slots)
    steady(pacer, latency, evaluation)
    now = 100.0
    wanted = pacer.wanted(0, staggered(slots, evaluation, now), now)
    assert wanted == math.ceil(slots * latency / evaluation) + pacer.buffer


def test_a_wave_that_just_started_needs_only_the_buffer():
    """The issue's stale case: W=16, LLM 1 s, eval 4 s. Sixteen evaluations that just started end in 4 s; a
    proposal takes 1 s; so nothing is proposed now (it would select from the store as it is), only in 3 s."""
    pacer = Pacer(16)
    steady(pacer, 1.0, 4.0)
    now = 10.0
    assert pacer.wanted(0, [now] * 16, now) == pacer.buffer
    assert pacer.next_need([now] * 16, now) == pytest.approx(3.0)
    assert pacer.wanted(0, [now] * 16, now + 3.0) == 16 + pacer.buffer


def test_evaluations_shorter_than_proposals_count_each_slot_several_times():
    """W=4, LLM 2 s, eval 1 s: each slot takes two candidates per proposal time, so eight must be under way
    (counting one per slot left the slots idle half the time)."""
    pacer = Pacer(4)
    steady(pacer, 2.0, 1.0)
    assert pacer.wanted(4, [], now=0.0) == 4 * 3 + pacer.buffer  # idle: one now, then at 1 s and 2 s
    assert pacer.next_need([10.0] * 4, 10.0) == pytest.approx(1.0)


def test_before_the_first_proposal_is_back_its_age_counts_at_most_two_per_slot():
    """LLM slower than an evaluation (eval 1 s), nothing measured yet: the first wave fills the slots; once it
    has taken longer than an evaluation, each slot counts a second candidate; however long it takes (under
    load, longer with every proposal added) never more than two per slot."""
    pacer = Pacer(16)
    pacer.evaluated(1.0)  # the initial program's
    assert pacer.wanted(16, [], now=0.0) == 16 + pacer.buffer
    assert pacer.wanted(16, [], now=0.5, oldest=0.0) == 16 + pacer.buffer
    assert pacer.wanted(16, [], now=1.5, oldest=0.0) == 32 + pacer.buffer
    assert pacer.wanted(16, [], now=30.0, oldest=0.0) == 32 + pacer.buffer
    assert pacer.next_need([], 0.5, oldest=0.0) == pytest.approx(0.25)  # the age grows: look again soon
    # once proposals are measured, one slow answer does not pull the next wave forward
    steady(pacer, 1.0, 4.0)
    assert pacer.wanted(0, [10.0] * 16, now=10.0, oldest=7.0) == pacer.buffer


def test_instant_evaluations_count_a_bounded_number_per_slot():
    pacer = Pacer(2)
    steady(pacer, 1.0, 0.0)
    assert pacer.wanted(2, [], now=0.0) == 2 * MAX_PER_SLOT + pacer.buffer
    instant = Pacer(2)
    steady(instant, 0.0, 0.0)  # and an instant LLM: one each
    assert instant.wanted(2, [], now=0.0) == 2 + instant.buffer


def test_rejected_proposals_start_more_proposals():
    pacer = Pacer(8)
    steady(pacer, 1.0, 2.0)
    now = 50.0
    wanted = pacer.wanted(0, staggered(8, 2.0, now), now)
    assert pacer.starts(wanted, proposing=0, ready=0) == wanted
    for index in range(20):  # every other proposal is rejected before evaluation
        pacer.proposed(1.0, evaluated=index % 2 == 0)
    assert pacer.wanted(0, staggered(8, 2.0, now), now) == wanted  # the candidates wanted are the same
    assert pacer.starts(wanted, proposing=0, ready=0) > wanted  # but more proposals make them
    for _ in range(50):  # all rejected: the count stays finite (1 / MIN_YIELD times the need)
        pacer.proposed(1.0, evaluated=False)
    assert pacer.starts(wanted, proposing=0, ready=0) <= 5 * wanted


def test_ready_candidates_count_in_full_however_many_proposals_are_rejected():
    """The issue's W=16, LLM 1 s, eval 4 s setting, as measured: the second wave came back with one rejection
    while the slots were about to free. 18 candidates ready for 16 slots (and the buffer of 3): the yield fell
    to 0.75, and dividing the whole count by it started 7 more proposals, children of the initial program,
    though the ready ones had passed every check. Only proposals under way are discounted."""
    pacer = Pacer(16)
    steady(pacer, 1.0, 4.0)
    pacer.proposed(1.0, evaluated=False)
    assert pacer.yield_ == pytest.approx(0.75)
    now = 10.0
    wanted = pacer.wanted(0, [now - 3.9] * 16, now)
    assert wanted == 16 + pacer.buffer
    assert pacer.starts(wanted, proposing=0, ready=18) == 2  # the one short of the 19, at a yield of 0.75
    assert pacer.starts(wanted, proposing=0, ready=19) == 0
    assert pacer.starts(wanted, proposing=4, ready=16) == 0  # 16 + 0.75 x 4
    assert pacer.starts(wanted, proposing=3, ready=16) == 1  # 16 + 0.75 x 3 = 18.25: one more


def test_no_buffer_while_every_proposal_builds_on_the_initial_program():
    pacer = Pacer(16)
    pacer.evaluated(4.0)  # the initial program's
    assert pacer.wanted(16, [], now=0.0, first=True) == 16
    steady(pacer, 1.0, 4.0)
    assert pacer.wanted(0, [10.0] * 16, now=13.0, first=True) == 16
    assert pacer.wanted(0, [10.0] * 16, now=13.0) == 16 + pacer.buffer


def test_proposals_due_just_before_the_first_result_wait_for_it():
    """W=8, LLM 4 s, eval 2 s: the fourth wave's proposals are due at 6 s, as the first result (at 6 s, the
    first wave's evaluations having started at 4 s) is stored, a few milliseconds either side. Held for it
    (at most 0.2 s past its due time), they build on it."""
    pacer = Pacer(8)
    steady(pacer, 4.0, 2.0)
    busy = [4.0] * 8
    assert pacer.hold(busy, now=5.95) == pytest.approx(0.25)  # until 0.2 s (HOLD x E) after it is due
    assert pacer.hold(busy, now=6.05) == pytest.approx(0.15)  # a little late, as under load: still held
    assert pacer.hold(busy, now=5.5) == 0.0  # half an evaluation away: the slots would idle too long
    assert pacer.hold(busy, now=6.25) == 0.0  # long overdue: nothing to wait for
    assert pacer.hold([], now=5.9) == 0.0
    assert Pacer(8).hold(busy, now=5.9) == 0.0  # nothing measured
    # with spread times the pacer proposes earlier, by its margins: the hold starts as much earlier
    noisy = Pacer(8)
    for index in range(20):
        noisy.proposed(4.0 + (0.1 if index % 2 else -0.1), evaluated=True)
        noisy.evaluated(2.0 + (0.05 if index % 2 else -0.05))
    assert noisy.hold(busy, now=5.3) == 0.0
    assert noisy.hold(busy, now=5.65) > 0.5


@pytest.mark.parametrize(
    ("slots", "latency", "evaluation", "candidates", "bound"),
    [
        (16, 1.0, 4.0, 63, 32),  # the first wave, and the one proposed a latency before it ends
        (8, 4.0, 2.0, 47, 24),  # L = 2E: proposals due as the first result is stored wait for it
        (8, 4.1, 2.0, 47, 32),  # a little later, and they cannot
        (2, 0.0, 1.0, 12, 2),  # an instant LLM: only the first wave
        (4, 2.0, 1.0, 5, 5),  # at most every candidate
        (4, 1.0, 0.0, 40, 4),  # instant evaluations: nothing to wait for
    ],
)
def test_fewest_children_of_the_initial_program_at_full_occupancy(
    slots, latency, evaluation, candidates, bound
):
    assert initial_children(slots, latency, evaluation, candidates) == bound


def test_a_stored_node_teaches_its_times_unless_the_endpoint_failed_it():
    pacer = Pacer(2)
    ok = Node(run_id="r", code="", stage=Stage.EVALUATED, timings={"propose": 3.0, "quick": 1.0, "full": 4.0})
    pacer.replay(ok)
    assert pacer.proposal.mean == 3.0 and pacer.evaluation.mean == 5.0 and pacer.yield_ == 1.0
    down = Node(run_id="r", code="", stage=Stage.REJECTED_STATIC, timings={"propose": 0.01})
    down.failure = FailureKind.LLM_ERROR
    pacer.replay(down)
    assert pacer.proposal.mean == 3.0 and pacer.yield_ == 1.0
    pacer.replay(Node(run_id="r", code="", stage=Stage.REJECTED_NOVELTY, timings={"propose": 3.0}))
    assert pacer.yield_ == pytest.approx(0.75) and pacer.evaluation.mean == 5.0
    # a node still PROPOSED passed the checks: it reaches a slot
    pacer.replay(Node(run_id="r", code="", timings={"propose": 3.0}))
    assert pacer.yield_ == pytest.approx(0.8125)
    # the operator's evaluation Job time (pod start-up included) stands for the stages' own
    on_cluster = Pacer(2)
    on_cluster.replay(
        Node(
            run_id="r",
            code="",
            stage=Stage.EVALUATED,
            timings={"quick": 0.001, "evaluate_job": 6.0, "propose": 0.01, "propose_job": 4.0},
        )
    )
    assert on_cluster.evaluation.mean == 6.0 and on_cluster.proposal.mean == 4.0


def test_spread_in_evaluation_times_widens_the_margin():
    calm, noisy = Pacer(8), Pacer(8)
    steady(calm, 1.0, 4.0)
    for index in range(40):
        noisy.proposed(1.0, evaluated=True)
        noisy.evaluated(4.0 + (1.5 if index % 2 else -1.5))
    now = 100.0
    busy = staggered(8, 4.0, now)
    assert noisy.wanted(0, busy, now) > calm.wanted(0, busy, now)


def test_next_need_without_running_evaluations_and_for_overdue_ones():
    pacer = Pacer(2)
    steady(pacer, 1.0, 2.0)
    assert pacer.next_need([], 5.0) is None
    # both should have ended at 2: counted as ending now (one candidate each, not three since 2), and each
    # takes its second one 2 s from now, which comes within the 1 s horizon in 1 s
    assert pacer.wanted(0, [0.0, 0.0], 5.0) == 2 + pacer.buffer
    assert pacer.next_need([0.0, 0.0], 5.0) == pytest.approx(1.0)


def test_estimate_ignores_negative_durations_and_follows_new_samples():
    estimate = Estimate()
    estimate.add(-3.0)
    assert estimate.mean == 0.0 and estimate.deviation == 0.0
    for _ in range(30):
        estimate.add(2.0)
    assert estimate.mean == pytest.approx(2.0, abs=0.01)
