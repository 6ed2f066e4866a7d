"""What a Job (or a Kubeflow TrainJob) of a run says about its work: role, candidate, attempt and state.

The kopf index keeps one `JobInfo` per owned Job, refreshed from the watch stream, so a reconcile reads the
run's Jobs without an API request. States: `waiting` (suspended, e.g. by Kueue until admission), `active`,
`succeeded`, `failed`. A Job's start time (second resolution) is what the pacer counts a running evaluation
or proposal from (plan.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.runtime.kubernetes import (
    ATTEMPT_LABEL,
    CANDIDATE_LABEL,
    NODE_ANNOTATION,
    QUEUE_LABEL,
    ROLE_LABEL,
)

WAITING, ACTIVE, SUCCEEDED, FAILED = "waiting", "active", "succeeded", "failed"


@dataclass(frozen=True)
class JobInfo:
    name: str
    role: Role
    key: str
    attempt: int
    node_id: str
    state: str
    kind: str = "Job"
    finished_at: float | None = None  # epoch seconds, for the backoff of the next attempt
    # epoch seconds: the Job's start (its creation, before it has one), for the pacer (None: not seen yet)
    started_at: float | None = None
    reason: str = ""  # why it failed, or why it waits
    queued: bool = False  # carries a Kueue queue label
    uid: str = ""  # the object's, as listed (a TrainJob's peer policy names it as its owner)

    @property
    def done(self) -> bool:
        return self.state in (SUCCEEDED, FAILED)


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(status: Mapping[str, Any], *types: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") in types and cond.get("status") == "True":
            return cond
    return None


def job_state(body: Mapping[str, Any]) -> tuple[str, float | None, str]:
    """(state, finished_at, reason) of a batch/v1 Job or a trainer.kubeflow.org TrainJob."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    done = _condition(status, "Complete", "SuccessCriteriaMet")
    if done is not None or (status.get("succeeded") or 0) >= 1:
        when = parse_time((done or {}).get("lastTransitionTime") or status.get("completionTime"))
        return SUCCEEDED, when, ""
    failed = _condition(status, "Failed", "FailureTarget")
    if failed is not None or (status.get("failed") or 0) > (spec.get("backoffLimit") or 0):
        cond = failed or {}
        reason = ": ".join(p for p in (cond.get("reason"), cond.get("message")) if p) or "pod failed"
        return FAILED, parse_time(cond.get("lastTransitionTime")), reason
    if spec.get("suspend"):
        return WAITING, None, "suspended (waiting for admission)"
    return ACTIVE, None, ""


def job_info(body: Mapping[str, Any]) -> JobInfo | None:
    """None for an object that lacks the labels the operator puts on its Jobs (or names no step it knows)."""
    meta = body.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    key = labels.get(CANDIDATE_LABEL)
    try:
        role = Role(labels.get(ROLE_LABEL, ""))
    except ValueError:
        return None
    if not key:
        return None
    state, finished_at, reason = job_state(body)
    started_at = parse_time((body.get("status") or {}).get("startTime")) or parse_time(
        meta.get("creationTimestamp")
    )
    return JobInfo(
        name=meta.get("name", ""),
        role=role,
        key=key,
        attempt=int(labels.get(ATTEMPT_LABEL, "0") or 0),
        node_id=annotations.get(NODE_ANNOTATION, ""),
        state=state,
        kind=body.get("kind") or "Job",
        finished_at=finished_at,
        started_at=started_at,
        reason=reason,
        queued=QUEUE_LABEL in labels,
        uid=meta.get("uid", ""),
    )
