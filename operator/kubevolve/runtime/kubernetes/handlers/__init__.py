"""kopf wiring, one concern per module: settings and clients (`lifecycle`), the Job index and Job wake-ups
(`jobs`), the per-run reconcile loop (`runs`), and the finalizer that removes a deleted run's Jobs
(`deletion`). `build_registry` puts them in a fresh registry, so tests and benchmarks can start several
operators, one after the other, in one process.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.handlers import deletion, jobs, lifecycle, runs


def build_registry(config: OperatorConfig, login: kopf.ConnectionInfo | None = None) -> kopf.OperatorRegistry:
    """A registry with every handler, logging in with `login` if given, else as kopf does by default with the
    kubernetes client installed: the pod's service account, or the kubeconfig (`kopf.login_via_client`)."""
    registry = kopf.OperatorRegistry()
    if login is None:
        kopf.on.login(id="login_via_client", registry=registry)(kopf.login_via_client)
    else:

        @kopf.on.login(id="login", registry=registry)
        def kubevolve_login(**_: Any) -> kopf.ConnectionInfo:
            return login

    lifecycle.register(registry)
    jobs.register(registry, trainjobs=config.trainjobs)
    runs.register(registry)
    deletion.register(registry)
    return registry
