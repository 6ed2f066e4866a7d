"""The run's Jobs as kopf sees them: an in-memory index per run (fed by the watch stream, rebuilt from the
initial listing after a restart, before any handler runs) and a wake-up of the run's loop on every change."""

from __future__ import annotations

import kopf

from kubevolve.runtime.kubernetes import (
    ROLE_LABEL,
    RUN_LABEL,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_PLURAL,
    telemetry,
)
from kubevolve.runtime.kubernetes.observe import ACTIVE, job_info

OWNED = {RUN_LABEL: kopf.PRESENT}


def _index(namespace: str, labels: dict, body: dict) -> dict:
    info = job_info(body)
    return {} if info is None else {(namespace, labels[RUN_LABEL]): info}


def _wake(namespace: str, labels: dict, memo: kopf.Memo, body: dict, event_type: str) -> None:
    """Wake the run's loop, except for the news it already has (a Job it just created, still running)."""
    ctx = getattr(memo, "kubevolve", None)
    if ctx is None:
        return
    telemetry.observe_job(ctx, body, event_type, labels[RUN_LABEL], labels.get(ROLE_LABEL, ""))
    info = job_info(body)
    if event_type == "ADDED" and info is not None and info.state == ACTIVE:
        return
    ctx.wakers.wake(namespace, labels[RUN_LABEL])


def register(registry: kopf.OperatorRegistry, *, trainjobs: bool) -> None:
    @kopf.index("batch", "v1", "jobs", id="kubevolve_jobs", labels=OWNED, registry=registry)
    def kubevolve_jobs(namespace, labels, body, **_):
        return _index(namespace, labels, body)

    @kopf.on.event("batch", "v1", "jobs", id="job_changed", labels=OWNED, registry=registry)
    def kubevolve_job_changed(namespace, labels, memo, body, type, **_):
        _wake(namespace, labels, memo, body, type)

    if not trainjobs:
        return

    @kopf.index(
        TRAINER_GROUP,
        TRAINER_VERSION,
        TRAINJOB_PLURAL,
        id="kubevolve_trainjobs",
        labels=OWNED,
        registry=registry,
    )
    def kubevolve_trainjobs(namespace, labels, body, **_):
        return _index(namespace, labels, body)

    @kopf.on.event(
        TRAINER_GROUP,
        TRAINER_VERSION,
        TRAINJOB_PLURAL,
        id="trainjob_changed",
        labels=OWNED,
        registry=registry,
    )
    def kubevolve_trainjob_changed(namespace, labels, memo, body, type, **_):
        _wake(namespace, labels, memo, body, type)


def indexed_jobs(kwargs: dict, namespace: str, run_label: str) -> list:
    """The JobInfos of one run from the Job index (and the TrainJob index, when it is on)."""
    out = []
    for index_name in ("kubevolve_jobs", "kubevolve_trainjobs"):
        index = kwargs.get(index_name)
        if index is not None and (namespace, run_label) in index:
            out.extend(index[(namespace, run_label)])
    return out
