"""Starting the operator: `kubevolve operator` in a pod (or on a laptop with a kubeconfig), or in-process
for tests and benchmarks (`start_operator`, which runs kopf in the caller's event loop)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import kopf

from .config import OperatorConfig
from .context import OperatorContext
from .handlers import build_registry
from .kube import Kube


def run_operator(config: OperatorConfig, *, liveness: str | None = None, verbose: bool = False) -> None:
    """Run until SIGINT/SIGTERM: one replica (standalone: no kopf peering objects needed)."""
    kopf.configure(verbose=verbose, log_prefix=True)
    ctx = OperatorContext(config, Kube.from_environment())
    try:
        kopf.run(
            registry=build_registry(config),
            memo=kopf.Memo(kubevolve=ctx),
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=True,
            liveness_endpoint=liveness,
        )
    finally:
        ctx.close()


class RunningOperator:
    """An operator running as a task of the current event loop; `stop()` ends it like a SIGTERM would."""

    def __init__(self, ctx: OperatorContext, registry: kopf.OperatorRegistry, namespaces: Sequence[str] = ()):
        self.ctx = ctx
        self.stop_flag: asyncio.Event = asyncio.Event()
        self.ready_flag: asyncio.Event = asyncio.Event()
        self.task = asyncio.create_task(
            kopf.operator(
                registry=registry,
                memo=kopf.Memo(kubevolve=ctx),
                clusterwide=not namespaces,
                namespaces=list(namespaces),
                standalone=True,
                stop_flag=self.stop_flag,
                ready_flag=self.ready_flag,
            )
        )

    async def stop(self, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        try:
            await asyncio.wait_for(self.task, timeout)
        except (TimeoutError, asyncio.CancelledError):
            pass
        finally:
            self.ctx.stores.close()


async def start_operator(
    config: OperatorConfig,
    kube: Kube,
    *,
    login: kopf.ConnectionInfo | None = None,
    namespaces: Sequence[str] = (),
) -> RunningOperator:
    """Start an operator in this event loop, optionally logging in to a given API server (kmock)."""
    registry = build_registry(config)
    if login is not None:

        @kopf.on.login(registry=registry)
        def kubevolve_login(**_):
            return login

    logging.getLogger("kopf").setLevel(logging.WARNING)
    running = RunningOperator(OperatorContext(config, kube), registry, namespaces)
    await asyncio.wait_for(running.ready_flag.wait(), 30)
    return running
