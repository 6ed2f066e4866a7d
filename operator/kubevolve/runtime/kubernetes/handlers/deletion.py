"""The finalizer: a deleted EvolutionRun takes its Jobs (and their evaluation ConfigMaps) with it, even where
no garbage collector follows the owner references (and sooner where one does). The store keeps the run's
nodes: results outlive the object."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from kubevolve.core.kinds import Role
from kubevolve.core.spec import SpecError
from kubevolve.runtime.kubernetes import GROUP, PLURAL, ROLE_LABEL, RUN_LABEL, VERSION, telemetry
from kubevolve.runtime.kubernetes.context import OperatorContext
from kubevolve.runtime.kubernetes.handlers.jobs import indexed_jobs
from kubevolve.runtime.kubernetes.jobs import store_url
from kubevolve.runtime.kubernetes.names import run_label
from kubevolve.runtime.kubernetes.reconcile import parse_spec
from kubevolve.runtime.kubernetes.snapshot import set_phase
from kubevolve.store.base import NotFound, StoreError


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup", registry=registry)
    async def kubevolve_run_deleted(
        body: kopf.Body, name: str, namespace: str | None, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
    ) -> None:
        assert namespace is not None  # EvolutionRuns and Jobs are namespaced
        ctx = memo.kubevolve
        label = run_label(name)
        indexed = indexed_jobs(kwargs, namespace, label)
        targets = {(j.name, j.kind) for j in indexed}
        inputs = {j.name for j in indexed if j.role == Role.EVALUATE and j.kind == "Job"}
        listed = await ctx.kube.list_jobs(namespace, {RUN_LABEL: label}, trainjobs=ctx.config.trainjobs)
        for item in listed:
            kind, meta = item.get("kind", "Job"), item["metadata"]
            targets.add((meta["name"], kind))
            if kind == "Job" and (meta.get("labels") or {}).get(ROLE_LABEL) == Role.EVALUATE:
                inputs.add(meta["name"])
        for job_name, kind in sorted(targets):
            await ctx.kube.delete(namespace, job_name, kind)
        for job_name in sorted(inputs):
            await ctx.kube.delete(namespace, job_name, "ConfigMap")
        logger.info(f"deleted {len(targets)} Jobs of {namespace}/{name}")
        ctx.expectations.pop((namespace, label), None)
        ctx.wakers.forget(namespace, label)
        ctx.spec_tokens.pop((namespace, label), None)
        ctx.locks.pop((namespace, name), None)
        telemetry.forget_run(ctx, namespace, name)
        await _mark_stopped(ctx, body, name, namespace)


async def _mark_stopped(ctx: OperatorContext, body: kopf.Body, name: str, namespace: str) -> None:
    """The store's run record says the run was deleted (unless it had finished); errors are not fatal."""
    try:
        spec = parse_spec(body)
        url = store_url(spec, ctx.config)
        if not url:
            return
        store = await asyncio.to_thread(ctx.stores.get, url, namespace)
        record = await asyncio.to_thread(store.get_run, name)
        if record.phase not in ("Succeeded", "Failed"):
            await asyncio.to_thread(set_phase, store, record, "Suspended", "the EvolutionRun was deleted")
    except (SpecError, StoreError, NotFound):
        return
