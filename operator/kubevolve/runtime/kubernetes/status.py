"""The run's status, Katib style: a phase, conditions with reasons, counts by outcome and the best result.

Conditions: Ready (the spec is valid and the store answers), Progressing (Jobs are running; False with
reason WaitingForAdmission while every Job waits for Kueue), Suspended, Succeeded and Failed. A condition's
lastTransitionTime changes only when its status does. The status is patched only when it changed, so a quiet
reconcile costs no write.
"""

from __future__ import annotations

from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.core.models import Node, Stage
from kubevolve.runtime.kubernetes.observe import format_time
from kubevolve.runtime.kubernetes.plan import Plan
from kubevolve.runtime.kubernetes.resources import TaskFacts
from kubevolve.runtime.kubernetes.snapshot import Snapshot

COUNT_NAMES = {
    Stage.PROPOSED: "proposed",
    Stage.EVALUATED: "evaluated",
    Stage.REJECTED_STATIC: "rejectedStatic",
    Stage.REJECTED_NOVELTY: "rejectedNovelty",
    Stage.FAILED_QUICK: "failedQuick",
    Stage.FAILED_FULL: "failedFull",
}
TERMINAL = ("Succeeded", "Failed")


def condition(kind: str, ok: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def merge_conditions(old: list[dict], new: list[dict], now: str, generation: int | None) -> list[dict]:
    """New conditions, keeping each one's lastTransitionTime while its status stays the same."""
    before = {c.get("type"): c for c in old or []}
    out = []
    for cond in new:
        prev = before.get(cond["type"])
        same = prev is not None and prev.get("status") == cond["status"]
        cond = {
            **cond,
            "lastTransitionTime": prev.get("lastTransitionTime", now) if prev is not None and same else now,
        }
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    return out


def best_value(best: Node | None, facts: TaskFacts) -> float | None:
    """The best node's primary metric as the task reports it (not the engine's higher-is-better score)."""
    if best is None or best.score is None:
        return None
    if facts.metric and facts.metric in best.metrics:
        return float(best.metrics[facts.metric])
    return facts.to_metric(best.score)


def _progress_message(plan: Plan, snap: Snapshot, limit: int | None) -> str:
    running = plan.running
    parts = [f"{snap.finished}" + (f"/{limit}" if limit else "") + " candidates"]
    busy = ", ".join(
        f"{n} {w}"
        for w, n in (
            ("proposing", running[Role.PROPOSE]),
            ("evaluating", running[Role.EVALUATE]),
            ("analyzing", running[Role.ANALYZE]),
        )
        if n
    )
    if busy:
        parts.append(busy)
    if plan.waiting:
        parts.append(f"{plan.waiting} waiting for admission")
    return "; ".join(parts)


def run_conditions(plan: Plan, snap: Snapshot, queue: str | None, limit: int | None) -> list[dict]:
    active = sum(plan.running.values())
    terminal = plan.phase in TERMINAL
    if plan.waiting and plan.waiting >= active:
        progressing = condition(
            "Progressing",
            False,
            "WaitingForAdmission",
            f"{plan.waiting} Jobs wait for admission to queue {queue}",
        )
    elif active and not terminal:
        progressing = condition("Progressing", True, "JobsRunning", _progress_message(plan, snap, limit))
    else:
        progressing = condition("Progressing", False, "Finished" if terminal else "Idle")
    suspended = plan.phase == "Suspended"
    return [
        condition("Ready", True, "SpecAccepted", "the spec is valid and the store answers"),
        progressing,
        condition(
            "Suspended",
            suspended,
            "SuspendedBySpec" if suspended else "NotSuspended",
            f"no new Jobs; {active} still running" if suspended else "",
        ),
        condition(
            "Succeeded",
            plan.phase == "Succeeded",
            plan.reason if plan.phase == "Succeeded" else "NotFinished",
            plan.message if plan.phase == "Succeeded" else "",
        ),
        condition(
            "Failed",
            plan.phase == "Failed",
            plan.reason if plan.phase == "Failed" else "NoFailure",
            plan.message if plan.phase == "Failed" else "",
        ),
    ]


def build_status(
    old: dict[str, Any],
    plan: Plan,
    snap: Snapshot,
    facts: TaskFacts,
    *,
    generation: int | None,
    queue: str | None,
    limit: int | None,
    now: float,
) -> dict[str, Any]:
    stamp = format_time(now)
    counts = {name: snap.counts.get(stage, 0) for stage, name in COUNT_NAMES.items()}
    counts["total"] = snap.finished
    best = best_value(snap.best, facts)
    terminal = plan.phase in TERMINAL
    status: dict[str, Any] = {
        "phase": plan.phase,
        "message": plan.message if terminal else _progress_message(plan, snap, limit),
        "observedGeneration": generation,
        "startedAt": format_time(snap.record.created_at),
        "completedAt": (old.get("completedAt") or stamp) if terminal else None,
        "candidates": counts,
        "bestScore": best,
        "bestNode": snap.best.id if snap.best else None,
        "nextCandidate": plan.next_index,
        "jobs": {
            "proposing": plan.running[Role.PROPOSE],
            "evaluating": plan.running[Role.EVALUATE],
            "analyzing": plan.running[Role.ANALYZE],
            "waitingAdmission": plan.waiting,
            "failed": plan.failed_jobs,
        },
    }
    new_conditions = run_conditions(plan, snap, queue, limit)
    status["conditions"] = merge_conditions(old.get("conditions") or [], new_conditions, stamp, generation)
    return status


def problem_status(
    old: dict[str, Any], reason: str, message: str, *, failed: bool, generation: int | None, now: float
) -> dict[str, Any]:
    """The spec cannot be used (Failed) or the store does not answer (not Ready, retried)."""
    stamp = format_time(now)
    conditions = [condition("Ready", False, reason, message)]
    if failed:
        conditions.append(condition("Failed", True, reason, message))
    return {
        "phase": "Failed" if failed else old.get("phase", "Pending"),
        "message": message,
        "observedGeneration": generation,
        "conditions": merge_conditions(old.get("conditions") or [], conditions, stamp, generation),
    }


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """A merge patch from the old status to the new one (None values delete keys), or None when equal."""
    patch = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new and k != "kopf"})
    return {k: v for k, v in patch.items() if not (v is None and k not in old)} or None


def transition_events(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Kubernetes events for milestones, derived from the status change alone (so a restart repeats none)."""
    events = []
    old_phase, phase = old.get("phase"), new.get("phase")
    if phase != old_phase:
        if phase == "Running" and old_phase in (None, "Pending"):
            events.append(("Normal", "Started", "the run started"))
        elif phase == "Running" and old_phase == "Suspended":
            events.append(("Normal", "Resumed", "the run was resumed"))
        elif phase == "Suspended":
            events.append(("Normal", "Suspended", "spec.suspend is true: no new Jobs"))
        elif phase == "Succeeded":
            events.append(("Normal", "BudgetReached", new.get("message", "")))
        elif phase == "Failed":
            reason = next((c["reason"] for c in new.get("conditions", []) if c["type"] == "Failed"), "Failed")
            events.append(("Warning", reason, new.get("message", "")))
    best, before = new.get("bestScore"), old.get("bestScore")
    if best is not None and new.get("bestNode") != old.get("bestNode"):
        was = "" if before is None else f" (was {before:.6g})"
        events.append(("Normal", "NewBest", f"new best {best:.6g} from node {new.get('bestNode')}{was}"))
    return events
