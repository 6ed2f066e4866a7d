"""What a cluster run may not do, whatever its schema allows: checks the operator makes before any Job.

- A store every pod can share. Pods of one run land on different nodes; a SQLite file cannot be shared
  between them (its locking breaks on network filesystems). Outside a cluster (an operator against an
  emulated API server, its "pods" local processes) a SQLite file is fine.
- Secrets from the run's own namespace only: a lab must never point a run at another lab's credentials.
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
