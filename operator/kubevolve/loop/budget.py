"""When a run stops: the budget check shared by the local runtime and the operator."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kubevolve.core.spec import BudgetSpec


@dataclass(frozen=True)
class BudgetVerdict:
    reason: str
    failed: bool = False  # True: the run failed (too many failures); False: it finished its budget


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
            f"budget reached: {candidates} candidates (maxCandidates {budget.max_candidates})"
        )
    if target_score is not None and best_score is not None and best_score >= target_score:
        return BudgetVerdict(f"target reached: best score {best_score:.6g} >= {target_score:.6g}")
    if budget.max_llm_cost is not None and llm_cost >= budget.max_llm_cost:
        return BudgetVerdict(
            f"LLM budget reached: ${llm_cost:.4f} spent (maxLlmCost ${budget.max_llm_cost:g})"
        )
    if budget.deadline_seconds is not None and now - started_at >= budget.deadline_seconds:
        return BudgetVerdict(
            f"deadline reached: {now - started_at:.0f}s (deadlineSeconds {budget.deadline_seconds:g})"
        )
    if budget.max_failures is not None and consecutive_failures >= budget.max_failures:
        return BudgetVerdict(
            f"{consecutive_failures} consecutive failed candidates (maxFailures {budget.max_failures})",
            failed=True,
        )
    return None
