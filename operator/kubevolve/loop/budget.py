"""The run's rules, shared by the local runtime and the operator: when a run stops (its budget), which results
count as failures, what a node cost in LLM money, and which failures go back to the proposer.

Each runtime keeps its own counters (the local runtime in memory, the operator from a store snapshot) and asks
these functions what they mean, so the two cannot drift apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import BudgetSpec, EngineerSpec

RETRIED_STAGES = (Stage.REJECTED_STATIC, Stage.FAILED_QUICK)  # failures an error message can help fix


class StopCause(StrEnum):
    """Which limit of the budget stopped a run."""

    CANDIDATES = "maxCandidates"
    TARGET = "targetScore"
    LLM_COST = "maxLlmCost"
    DEADLINE = "deadlineSeconds"
    FAILURES = "maxFailures"


@dataclass(frozen=True)
class BudgetVerdict:
    reason: str
    failed: bool = False  # True: the run failed (too many failures); False: it finished its budget
    cause: StopCause | None = None  # None: a runtime's own reason (e.g. the initial program failed)


def llm_cost(node: Node) -> float:
    """US dollars a node cost: its proposal, the LLM judge's verdict on it and its analysis (what
    `budget.maxLlmCost` counts)."""
    return node.llm.get("cost_usd", 0.0) + node.llm.get("judge_cost_usd", 0.0) + analysis_cost(node)


def analysis_cost(node: Node) -> float:
    """US dollars the Analyzer spent on a node (added to `node.llm` after the node is stored)."""
    return node.llm.get("analysis_cost_usd", 0.0)


def failure_streak(streak: int, node: Node) -> int:
    """The count of consecutive failed candidates after `node`, given the count before it (`budget.maxFailures`).

    An evaluated candidate ends a streak. A duplicate is not a failure of the candidate (the proposer repeated
    itself), and a candidate still awaiting evaluation has no outcome yet: neither changes the count.
    """
    if node.stage is Stage.EVALUATED:
        return 0
    if node.stage in (Stage.PROPOSED, Stage.REJECTED_NOVELTY):
        return streak
    return streak + 1


def wants_debug_retry(node: Node, engineer: EngineerSpec, *, proposer_reads_feedback: bool) -> bool:
    """A failed static check or quick stage goes back, with its error, to a proposer that can read it (an
    LLM), at most `engineer.debugRetries` times per candidate."""
    return proposer_reads_feedback and node.stage in RETRIED_STAGES and node.attempt < engineer.debug_retries


def check_budget(
    budget: BudgetSpec,
    *,
    candidates: int,
    started_at: float,
    best_score: float | None,
    target_score: float | None,
    consecutive_failures: int,
    llm_cost: float = 0.0,
    now: float | None = None,
) -> BudgetVerdict | None:
    """The reason the run must stop now, or None. `target_score` is already in score units (higher is better)."""
    now = time.time() if now is None else now
    if budget.max_candidates is not None and candidates >= budget.max_candidates:
        return BudgetVerdict(
            f"budget reached: {candidates} candidates (maxCandidates {budget.max_candidates})",
            cause=StopCause.CANDIDATES,
        )
    if target_score is not None and best_score is not None and best_score >= target_score:
        return BudgetVerdict(
            f"target reached: best score {best_score:.6g} >= {target_score:.6g}", cause=StopCause.TARGET
        )
    if budget.max_llm_cost is not None and llm_cost >= budget.max_llm_cost:
        return BudgetVerdict(
            f"LLM budget reached: ${llm_cost:.4f} spent (maxLlmCost ${budget.max_llm_cost:g})",
            cause=StopCause.LLM_COST,
        )
    if budget.deadline_seconds is not None and now - started_at >= budget.deadline_seconds:
        return BudgetVerdict(
            f"deadline reached: {now - started_at:.0f}s (deadlineSeconds {budget.deadline_seconds:g})",
            cause=StopCause.DEADLINE,
        )
    if budget.max_failures is not None and consecutive_failures >= budget.max_failures:
        return BudgetVerdict(
            f"{consecutive_failures} consecutive failed candidates (maxFailures {budget.max_failures})",
            failed=True,
            cause=StopCause.FAILURES,
        )
    return None
