"""One long-lived loop (a kopf daemon) per EvolutionRun: reconcile, then sleep until a Job of the run changes,
the spec changes, or the next timed action (a retry's backoff, the deadline, the resync interval) is due.

The loop keeps no state between passes: each pass reads the store and the Job index afresh, so the daemon
can be stopped and restarted (with the operator) at any time.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import kopf

from kubevolve.runtime.kubernetes import GROUP, PLURAL, VERSION, telemetry
from kubevolve.runtime.kubernetes.handlers.jobs import indexed_jobs
from kubevolve.runtime.kubernetes.names import run_label
from kubevolve.runtime.kubernetes.reconcile import reconcile

ERROR_DELAY = 5.0


async def nap(wake: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    async def stop() -> None:
        await stopped.wait()

    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=10.0, registry=registry)
    async def kubevolve_run(
        body: kopf.Body,
        name: str,
        namespace: str | None,
        memo: kopf.Memo,
        stopped: kopf.DaemonStopped,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        assert namespace is not None  # EvolutionRuns and Jobs are namespaced
        ctx = memo.kubevolve
        label = run_label(name)
        wake = ctx.wakers.event(namespace, label)

        def post(kind: str, reason: str, message: str) -> None:
            kopf.event(body, type=kind, reason=reason, message=message[:1000])

        while not stopped:
            wake.clear()
            started, result = time.perf_counter(), "ok"
            try:
                delay = await reconcile(ctx, body, indexed_jobs(kwargs, namespace, label), post)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # an API or store error: log it, retry soon; nothing is lost
                logger.warning(f"reconcile of {namespace}/{name} failed: {type(err).__name__}: {err}")
                delay, result = ERROR_DELAY, "error"
            telemetry.observe_reconcile(ctx, namespace, name, time.perf_counter() - started, result)
            await nap(wake, stopped, delay)

    @kopf.on.event(GROUP, VERSION, PLURAL, id="spec_changed", registry=registry)
    def kubevolve_run_changed(
        body: kopf.Body, name: str, namespace: str | None, memo: kopf.Memo, **_: Any
    ) -> None:
        """Wake the loop when the spec changes (not on the loop's own status patches)."""
        assert namespace is not None  # EvolutionRuns and Jobs are namespaced
        ctx = getattr(memo, "kubevolve", None)
        if ctx is None:
            return
        token = json.dumps(body.get("spec"), sort_keys=True, default=str)
        key = (namespace, run_label(name))
        if ctx.spec_tokens.get(key) != token:
            ctx.spec_tokens[key] = token
            ctx.wakers.wake(*key)
