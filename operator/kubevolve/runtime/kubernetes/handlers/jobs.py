"""The run's Jobs as kopf sees them: an in-memory index per run (fed by the watch stream, rebuilt from the
initial listing after a restart, before any handler runs) and a wake-up of the run's loop on every change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from kubevolve.runtime.kubernetes import (
    ROLE_LABEL,
    RUN_LABEL,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_PLURAL,
    telemetry,
)
from kubevolve.runtime.kubernetes.observe import ACTIVE, JobInfo, job_info

OWNED = {RUN_LABEL: kopf.PRESENT}


def _index(
    namespace: str, labels: Mapping[str, str], body: Mapping[str, Any]
) -> dict[tuple[str, str], JobInfo]:
    info = job_info(body)
    return {} if info is None else {(namespace, labels[RUN_LABEL]): info}


def _wake(
    namespace: str, labels: Mapping[str, str], memo: kopf.Memo, body: Mapping[str, Any], event_type: str
) -> None:
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
    def kubevolve_jobs(
        namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], JobInfo]:
        assert namespace is not None  # EvolutionRuns and Jobs are namespaced
        return _index(namespace, labels, body)

    @kopf.on.event("batch", "v1", "jobs", id="job_changed", labels=OWNED, registry=registry)
    def kubevolve_job_changed(
        namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, body: kopf.Body, type: str, **_: Any
    ) -> None:
        assert namespace is not None  # EvolutionRuns and Jobs are namespaced
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
    def kubevolve_trainjobs(
        namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], JobInfo]:
        assert namespace is not None  # EvolutionRuns and Jobs are namespaced
        return _index(namespace, labels, body)

    @kopf.on.event(
        TRAINER_GROUP,
        TRAINER_VERSION,
        TRAINJOB_PLURAL,
        id="trainjob_changed",
        labels=OWNED,
        registry=registry,
    )
    def kubevolve_trainjob_changed(
        namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, body: kopf.Body, type: str, **_: Any
    ) -> None:
        assert namespace is not None  # EvolutionRuns and Jobs are namespaced
        _wake(namespace, labels, memo, body, type)


def indexed_jobs(kwargs: Mapping[str, Any], namespace: str, run_label: str) -> list[JobInfo]:
    """The JobInfos of one run from the Job index (and the TrainJob index, when it is on)."""
    out: list[JobInfo] = []
    for index_name in ("kubevolve_jobs", "kubevolve_trainjobs"):
        index = kwargs.get(index_name)
        if index is not None and (namespace, run_label) in index:
            out.extend(index[(namespace, run_label)])
    return out
