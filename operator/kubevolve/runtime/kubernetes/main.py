"""Starting the operator: `kubevolve operator` in a pod (or on a laptop with a kubeconfig), or in a thread
of the caller's process for tests and benchmarks (`start_operator`)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import kopf

from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.context import OperatorContext
from kubevolve.runtime.kubernetes.handlers import build_registry
from kubevolve.runtime.kubernetes.kube import Kube


def run_operator(
    config: OperatorConfig, *, liveness: str | None = None, verbose: bool = False, peering: str | None = None
) -> None:
    """Run until SIGINT/SIGTERM. One replica by default (standalone); with `peering`, several replicas share
    kopf's peering object and only the one with the highest priority is active."""
    kopf.configure(verbose=verbose, log_prefix=True)
    if not verbose:  # kopf logs every handler call at INFO: one line per Job event, too many for a cluster
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if config.metrics_port:
        from kubevolve.observe.metrics import serve

        serve(config.metrics_port, "0.0.0.0")
    ctx = OperatorContext(config, Kube.from_environment())
    try:
        kopf.run(
            registry=build_registry(config),
            memo=kopf.Memo(kubevolve=ctx),
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=peering is None,
            peering_name=peering,
            liveness_endpoint=liveness,
        )
    finally:
        ctx.close()


class RunningOperator:
    """An operator in its own thread and event loop, as a separate process would be; `stop()` ends it as a
    SIGTERM would. (kopf cancels every task of its loop when it stops, so it must not share the caller's.)"""

    def __init__(self, ctx: OperatorContext, registry: kopf.OperatorRegistry, namespaces: Sequence[str] = ()):
        self.ctx = ctx
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, args=(registry, namespaces), daemon=True)
        self.thread.start()

    def _main(self, registry: kopf.OperatorRegistry, namespaces: Sequence[str]) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    memo=kopf.Memo(kubevolve=self.ctx),
                    clusterwide=not namespaces,
                    namespaces=list(namespaces),
                    standalone=True,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                )
            )
        except BaseException as err:  # reported by stop() and wait_ready()
            self.error = err

    async def wait_ready(self, timeout: float = 30.0) -> None:
        if not await asyncio.to_thread(self.ready_flag.wait, timeout):
            raise TimeoutError(f"the operator did not start in {timeout}s: {self.error!r}")

    async def stop(self, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, timeout)
        if not self.thread.is_alive():  # never close stores under a thread that may still read them
            self.ctx.close()


async def start_operator(
    config: OperatorConfig,
    kube: Kube,
    *,
    login: kopf.ConnectionInfo | None = None,
    namespaces: Sequence[str] = (),
) -> RunningOperator:
    """Start an operator (in a thread), optionally logging in to a given API server (kmock); wait until ready."""
    registry = build_registry(config, login)
    logging.getLogger("kopf").setLevel(logging.WARNING)
    running = RunningOperator(OperatorContext(config, kube), registry, namespaces)
    await running.wait_ready()
    return running
