"""The operator's Prometheus metrics (families defined in kubevolve.metrics): reconciles and their duration,
runs by phase per namespace, and how long each Job waited for its pod to start (queueing, Kueue admission).

The phase map and the set of Jobs already measured are in-memory conveniences for the exporter only; after a
restart they are rebuilt as runs are reconciled (a Job that started meanwhile may be measured once more).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..metrics import METRICS
from .observe import parse_time
from .snapshot import PHASES


def observe_reconcile(ctx, namespace: str, name: str, seconds: float, result: str) -> None:
    """One pass of a run's loop; the run's phase was noted in `ctx.phases` by the pass itself."""
    METRICS.observe_reconcile(namespace, seconds, result)
    publish_phases(ctx, namespace)


def forget_run(ctx, namespace: str, name: str) -> None:
    ctx.phases.pop((namespace, name), None)
    publish_phases(ctx, namespace)


def publish_phases(ctx, namespace: str) -> None:
    counts = Counter(str(PHASES[p]) for (ns, _), p in ctx.phases.items() if ns == namespace and p in PHASES)
    METRICS.set_runs_by_phase(namespace, dict(counts))


def observe_job(ctx, body: dict[str, Any], event_type: str, run: str, role: str) -> None:
    """Once per Job: the seconds from its creation to its start (status.startTime)."""
    meta = body.get("metadata") or {}
    key = (meta.get("namespace"), meta.get("name"))
    if event_type == "DELETED":
        ctx.started_jobs.discard(key)
        return
    started = parse_time((body.get("status") or {}).get("startTime"))
    created = parse_time(meta.get("creationTimestamp"))
    if started is None or created is None or key in ctx.started_jobs:
        return
    ctx.started_jobs.add(key)
    METRICS.admission_wait.labels(key[0], run, role).observe(max(0.0, started - created))
