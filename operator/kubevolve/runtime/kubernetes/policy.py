"""What a cluster run may not do, whatever its schema allows: checks the operator makes before any Job.

- A store every pod can share. Pods of one run land on different nodes; a SQLite file cannot be shared
  between them (its locking breaks on network filesystems). Outside a cluster (an operator against an
  emulated API server, its "pods" local processes) a SQLite file is fine.
- Secrets from the run's own namespace only: a lab must never point a run at another lab's credentials.
- TrainJobs only from an operator started to run them (`--trainjobs`, the chart's `operator.trainJobs`, which
  also grants it the trainjobs RBAC): otherwise every create would be a 403, retried forever.
- A judged task's TrainJob on the run's own TrainingRuntime only: a cluster admin's runtime has no container
  to keep the candidate apart from its judge, nor the judge's seed (trainjob.py).
"""

from __future__ import annotations

import os

from kubevolve.core.spec import RunSpec

LOCAL_SCHEMES = ("sqlite:", "file:")


def in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ


def _is_local_store(url: str) -> bool:
    return url.startswith(LOCAL_SCHEMES) or "://" not in url


def policy_problem(spec: RunSpec, namespace: str, store_url: str, *, cluster: bool) -> str | None:
    """Why the run must be refused, naming the field; None if it may run."""
    if cluster and _is_local_store(store_url):
        return (
            f"spec.store.url: {store_url!r} is a local SQLite store, which pods on different nodes cannot share; "
            "use the cluster's Weaviate (weaviate://... or http(s)://...)"
        )
    refs = [
        ("spec.llm.apiKeySecret", spec.llm.api_key_secret),
        ("spec.store.apiKeySecret", spec.store.api_key_secret if spec.store else None),
    ]
    for field, ref in refs:
        if ref is not None and ref.namespace not in (None, namespace):
            return (
                f"{field}.namespace: Secrets are read only from the run's own namespace ({namespace!r}), "
                f"not {ref.namespace!r}"
            )
    return None


def trainjob_problem(spec: RunSpec, *, enabled: bool) -> str | None:
    """Why a run that asks for TrainJobs cannot have them from this operator; None if it may run."""
    ev = spec.jobs.evaluate if spec.jobs else None
    if enabled or ev is None or ev.train_job is None:
        return None
    return (
        "spec.jobs.evaluate.trainJob: this operator does not run Kubeflow Trainer TrainJobs (start it with "
        "--trainjobs: the Helm value operator.trainJobs=true, where Trainer is installed), or remove trainJob "
        "to evaluate each candidate in one pod"
    )


def trainjob_runtime_problem(spec: RunSpec, *, judged: bool) -> str | None:
    """Why a judged task cannot be evaluated on the runtime the run names; None if it may run."""
    ev = spec.jobs.evaluate if spec.jobs else None
    if not judged or ev is None or ev.train_job is None or ev.train_job.runtime is None:
        return None
    return (
        f"spec.jobs.evaluate.trainJob.runtime: the task has a judge, which must run apart from the candidate "
        f"(the judge and candidate containers of the launcher pod) with the run's judge seed; only the run's own "
        f"TrainingRuntime has them, not {ev.train_job.runtime!r}: remove trainJob.runtime"
    )
