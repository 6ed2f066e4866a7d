"""kopf wiring, one concern per module: settings and clients (`lifecycle`), the Job index and Job wake-ups
(`jobs`), the per-run reconcile loop (`runs`), and the finalizer that removes a deleted run's Jobs
(`deletion`). `build_registry` puts them in a fresh registry, so tests and benchmarks can start several
operators, one after the other, in one process.
"""

from __future__ import annotations

import kopf
from kopf._core.intents.registries import SmartOperatorRegistry

from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.handlers import deletion, jobs, lifecycle, runs


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A registry with every handler; it keeps kopf's fallback logins (in-cluster, kubeconfig)."""
    registry = SmartOperatorRegistry()
    lifecycle.register(registry)
    jobs.register(registry, trainjobs=config.trainjobs)
    runs.register(registry)
    deletion.register(registry)
    return registry
