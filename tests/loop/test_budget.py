"""The run's rules (loop/budget.py), and that both runtimes read the same thing from the same history."""

from __future__ import annotations

import pytest

from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import BudgetSpec, EngineerSpec, RunSpec
from kubevolve.core.task import load_task
from kubevolve.loop.budget import StopCause, check_budget, failure_streak, llm_cost, wants_debug_retry
from kubevolve.loop.run_state import RunState
from kubevolve.runtime.kubernetes.snapshot import consecutive_failures

E, S, N, P, Q, F = (
    Stage.EVALUATED,
    Stage.REJECTED_STATIC,
    Stage.REJECTED_NOVELTY,
    Stage.PROPOSED,
    Stage.FAILED_QUICK,
    Stage.FAILED_FULL,
)


def node(stage: Stage, **fields) -> Node:
    return Node(run_id="r", code="x = 1", stage=stage, score=1.0 if stage is E else None, **fields)


def streak(stages: list[Stage]) -> int:
    count = 0
    for stage in stages:
        count = failure_streak(count, node(stage))
    return count


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ([], 0),
        ([S, Q, F], 3),
        ([S, Q, E], 0),  # an evaluated candidate ends a streak
        ([E, S, N, Q], 2),  # a duplicate is not a failure of the candidate
        ([E, Q, P, P, S], 2),  # nor is a candidate still awaiting evaluation
        ([N, N, N], 0),
    ],
)
def test_failure_streak(stages, expected):
    assert streak(stages) == expected


@pytest.mark.parametrize(
    "stages", [[S, Q, F], [E, S, N, Q], [E, Q, P, P, S], [Q, E, F, N, F, P, E, S], [E] * 3 + [F] * 7]
)
def test_the_operator_and_the_local_runtime_count_the_same_streak(stages, toy_task, store):
    for stage in stages:
        store.add_node(node(stage))
    state = RunState.load(RunSpec(task=str(toy_task)), load_task(toy_task), store, "r")
    assert consecutive_failures(store.list_nodes("r")) == state.consecutive_failures == streak(stages)


def test_llm_cost_counts_the_proposal_and_its_analysis():
    assert llm_cost(node(E, llm={"cost_usd": 0.25, "analysis_cost_usd": 0.5, "prompt_tokens": 9})) == 0.75
    assert llm_cost(node(E)) == 0.0


def test_debug_retry_only_for_fixable_failures_of_a_proposer_that_reads_them():
    engineer = EngineerSpec(debug_retries=2)
    for stage, fixable in [(S, True), (Q, True), (F, False), (N, False), (E, False)]:
        assert wants_debug_retry(node(stage), engineer, proposer_reads_feedback=True) is fixable
        assert not wants_debug_retry(node(stage), engineer, proposer_reads_feedback=False)
    assert wants_debug_retry(node(S, attempt=1), engineer, proposer_reads_feedback=True)
    assert not wants_debug_retry(node(S, attempt=2), engineer, proposer_reads_feedback=True)


@pytest.mark.parametrize(
    ("budget", "counters", "cause", "failed"),
    [
        ({"max_candidates": 5}, {"candidates": 5}, StopCause.CANDIDATES, False),
        ({"max_candidates": None}, {"best_score": 2.0, "target_score": 1.5}, StopCause.TARGET, False),
        ({"max_llm_cost": 1.0}, {"llm_cost": 1.0}, StopCause.LLM_COST, False),
        ({"deadline_seconds": 10}, {"now": 110.0}, StopCause.DEADLINE, False),
        ({"max_failures": 3}, {"consecutive_failures": 3}, StopCause.FAILURES, True),
    ],
)
def test_each_limit_names_its_cause(budget, counters, cause, failed):
    args = {
        "candidates": 1,
        "started_at": 100.0,
        "best_score": None,
        "target_score": None,
        "consecutive_failures": 0,
        "now": 101.0,
    }
    verdict = check_budget(BudgetSpec(**budget), **{**args, **counters})
    assert verdict is not None and verdict.cause is cause and verdict.failed is failed
    assert check_budget(BudgetSpec(**budget), **args) is None
