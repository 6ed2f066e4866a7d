"""Starting the operator: `kubevolve operator` in a pod (or on a laptop with a kubeconfig), or in a thread
of the caller's process for tests and benchmarks (`start_operator`).

Both run `operate`: serve the probes, wait for the Lease when leader election is on (leader.py), run kopf
(always standalone: the Lease, not kopf's peering, decides who reconciles), and stop kopf when told to or when
the Lease is lost; then give the Lease up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import kopf

from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.context import OperatorContext
from kubevolve.runtime.kubernetes.handlers import build_registry
from kubevolve.runtime.kubernetes.health import ForbiddenLogWatch, Health, parse_address, serve_probes
from kubevolve.runtime.kubernetes.kube import Kube
from kubevolve.runtime.kubernetes.leader import LeaderElector, LeaseSettings


def lease_settings(config: OperatorConfig) -> LeaseSettings | None:
    if not config.lease_name:
        return None
    return LeaseSettings(
        config.lease_name,
        config.lease_namespace,
        lease_seconds=config.lease_seconds,
        renew_deadline_seconds=config.lease_renew_seconds,
        retry_seconds=config.lease_retry_seconds,
    )


async def operate(
    ctx: OperatorContext,
    registry: kopf.OperatorRegistry,
    *,
    namespaces: Sequence[str] = (),
    stop_flag: threading.Event,
    ready_flag: threading.Event | None = None,
    health: Health | None = None,
    probes: tuple[str, int] | None = None,
    identity: str | None = None,
) -> bool:
    """Run one replica until `stop_flag` is set (True) or the Lease is lost (False)."""
    health = health or Health()
    ctx.kube.on_forbidden = health.refused
    watch = ForbiddenLogWatch(health)
    logging.getLogger("kopf").addHandler(watch)
    runner = await serve_probes(health, *probes) if probes else None
    lease = lease_settings(ctx.config)
    elector = None
    kopf_ready = _ReadyFlag(ready_flag)
    health.kopf_ready = kopf_ready.is_set
    try:
        if lease is not None:
            elector = LeaderElector(ctx.kube, lease, identity, on_result=health.lease_result)
            health.lease_retry_seconds, health.role = lease.retry_seconds, "standby"
            if not await elector.acquire(stop_flag.is_set):
                return True
        health.role = "leader"
        # created before kopf starts, so that kopf leaves it alone when it stops (it cancels the tasks it
        # finds were started after it)
        keeping = asyncio.ensure_future(elector.keep() if elector else asyncio.Event().wait())
        kopf_stop = threading.Event()
        running = asyncio.ensure_future(
            kopf.operator(
                registry=registry,
                memo=kopf.Memo(kubevolve=ctx),
                clusterwide=not namespaces,
                namespaces=list(namespaces),
                standalone=True,
                stop_flag=kopf_stop,
                ready_flag=kopf_ready,
            )
        )
        stopping = asyncio.ensure_future(asyncio.to_thread(stop_flag.wait))
        try:
            await asyncio.wait({keeping, running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            lost = keeping.done() and not stop_flag.is_set()
            health.role = "stopping"
            kopf_stop.set()
            stop_flag.set()  # ends the waiting thread
            await running
            return not lost
        finally:
            keeping.cancel()
            stopping.cancel()
    finally:
        health.role = "stopping"
        if elector is not None:
            await elector.release()
        logging.getLogger("kopf").removeHandler(watch)
        if runner is not None:
            await runner.cleanup()


class _ReadyFlag(threading.Event):
    """kopf's ready flag (it takes one), setting the caller's too."""

    def __init__(self, also: threading.Event | None):
        super().__init__()
        self.also = also

    def set(self) -> None:
        super().set()
        if self.also is not None:
            self.also.set()


def run_operator(config: OperatorConfig, *, health: str | None = None, verbose: bool = False) -> bool:
    """Run until SIGINT/SIGTERM (True), or until the Lease is lost (False: the caller exits non-zero and
    Kubernetes restarts the container, which then waits as a standby)."""
    import signal

    kopf.configure(verbose=verbose, log_prefix=True)
    if not verbose:  # kopf logs every handler call at INFO: one line per Job event, too many for a cluster
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if config.metrics_port:
        from kubevolve.observe.metrics import serve

        serve(config.metrics_port, "0.0.0.0")
    ctx = OperatorContext(config, Kube.from_environment())
    stop = threading.Event()

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # kopf installs its own once it runs; both stop it
            loop.add_signal_handler(sig, stop.set)
        return await operate(
            ctx,
            build_registry(config),
            namespaces=config.namespaces,
            stop_flag=stop,
            probes=parse_address(health) if health else None,
        )

    try:
        return asyncio.run(main())
    finally:
        ctx.close()


class RunningOperator:
    """An operator replica in its own thread and event loop, as a separate process would be; `stop()` ends
    it as a SIGTERM would. (kopf cancels every task of its loop when it stops, so it must not share the
    caller's.)"""

    def __init__(
        self,
        ctx: OperatorContext,
        registry: kopf.OperatorRegistry,
        namespaces: Sequence[str] = (),
        *,
        probes: tuple[str, int] | None = None,
        identity: str | None = None,
    ):
        self.ctx = ctx
        self.health = Health()
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self.lost_lease = False
        self.thread = threading.Thread(
            target=self._main, args=(registry, namespaces, probes, identity), daemon=True
        )
        self.thread.start()

    def _main(
        self,
        registry: kopf.OperatorRegistry,
        namespaces: Sequence[str],
        probes: tuple[str, int] | None,
        identity: str | None,
    ) -> None:
        try:
            kept = asyncio.run(
                operate(
                    self.ctx,
                    registry,
                    namespaces=namespaces,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                    health=self.health,
                    probes=probes,
                    identity=identity,
                )
            )
            self.lost_lease = not kept
        except BaseException as err:  # reported by stop() and wait_ready()
            self.error = err

    @property
    def leading(self) -> bool:
        return self.health.role == "leader"

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
    wait: bool = True,
    probes: tuple[str, int] | None = None,
    identity: str | None = None,
) -> RunningOperator:
    """Start an operator (in a thread), optionally logging in to a given API server (kmock); wait until kopf
    runs (`wait=False`: return at once, e.g. for a replica that waits for the Lease)."""
    registry = build_registry(config, login)
    logging.getLogger("kopf").setLevel(logging.WARNING)
    running = RunningOperator(
        OperatorContext(config, kube), registry, namespaces, probes=probes, identity=identity
    )
    if wait:
        await running.wait_ready()
    return running
