"""One reconcile of one EvolutionRun: read the store and the run's Jobs, decide (plan.py), act, report.

The order of the actions is what makes a crash at any point harmless: the results finished evaluation pods
published are stored first (results.py; the pass then reads the store again), then the decision's store
writes (a candidate recorded failed), then Job creations (idempotent; an evaluation's ConfigMap, and the
run's judge-seed Secret, before its Job; a TrainJob's peer NetworkPolicy after it, owned by it, and made by
a later pass for a running TrainJob that may lack it), then the status (with the next proposal index), and
only then the deletion of finished Jobs (with their ConfigMaps), whose results and follow-ups now exist.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubevolve.core.kinds import FailureKind, Role
from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import FailurePolicySpec, RunSpec, SpecError, parse_run_spec
from kubevolve.runtime.kubernetes.context import Expectations, OperatorContext
from kubevolve.runtime.kubernetes.handover import InputTooLarge, evaluation_input, judge_seed_secret
from kubevolve.runtime.kubernetes.jobs import (
    JobRequest,
    RunRef,
    build_job,
    object_name,
    store_url,
    uses_trainjob,
)
from kubevolve.runtime.kubernetes.kube import API_WAIT
from kubevolve.runtime.kubernetes.labkeys import ensure_lab_key, wanted
from kubevolve.runtime.kubernetes.names import make_key, node_id, retry_key, run_label
from kubevolve.runtime.kubernetes.netpol import trainjob_peer_policy
from kubevolve.runtime.kubernetes.observe import JobInfo
from kubevolve.runtime.kubernetes.plan import PlanInput, make_plan
from kubevolve.runtime.kubernetes.policy import (
    in_cluster,
    policy_problem,
    trainjob_problem,
    trainjob_runtime_problem,
)
from kubevolve.runtime.kubernetes.resources import TaskFacts, read_task, reported_facts
from kubevolve.runtime.kubernetes.results import awaiting_result, collect_results
from kubevolve.runtime.kubernetes.snapshot import record_failed, record_spec, set_phase, take_snapshot
from kubevolve.runtime.kubernetes.status import (
    TERMINAL,
    build_status,
    problem_status,
    status_patch,
    transition_events,
)
from kubevolve.runtime.kubernetes.telemetry import feed_run
from kubevolve.runtime.kubernetes.trainjob import build_runtime, build_trainjob
from kubevolve.store.base import Store, StoreError

log = logging.getLogger("kubevolve.operator")
Post = Callable[[str, str, str], None]  # (type, reason, message) -> a Kubernetes event on the run
STORE_RETRY_SECONDS = 10.0


def parse_spec(body: Mapping[str, Any]) -> RunSpec:
    raw = copy.deepcopy(dict(body.get("spec") or {}))
    if "name" in raw:
        raise SpecError("invalid run spec:\n  spec.name: unknown field (the run's name is metadata.name)")
    spec = parse_run_spec(raw)
    spec.name = body["metadata"]["name"]
    return spec


async def reconcile(
    ctx: OperatorContext, body: Mapping[str, Any], jobs: Iterable[JobInfo], post: Post
) -> float:
    """Reconcile once; return the seconds until the next pass is due (a Job event may come sooner)."""
    meta = body["metadata"]
    lock = ctx.lock(meta["namespace"], meta["name"])
    if lock.locked():
        log.warning(f"two reconciles of {meta['namespace']}/{meta['name']} at once: the second waits")
    async with lock:  # passes of one run never overlap, whoever starts them
        started, tally = time.perf_counter(), [0.0]
        token = API_WAIT.set(tally)
        try:
            return await _reconcile(ctx, body, list(jobs), post)
        finally:
            API_WAIT.reset(token)
            ctx.stats.record(time.perf_counter() - started, tally[0])


async def _problem(
    ctx: OperatorContext, body: Mapping[str, Any], post: Post, reason: str, message: str, *, failed: bool
) -> None:
    meta, old = body["metadata"], dict(body.get("status") or {})
    new = problem_status(
        old, reason, message, failed=failed, generation=meta.get("generation"), now=time.time()
    )
    ctx.phases[(meta["namespace"], meta["name"])] = new["phase"]
    patch = status_patch(old, new)
    if patch:
        await ctx.kube.patch_status(meta["namespace"], meta["name"], patch)
        if old.get("message") != message:
            post("Warning", reason, message)


async def _reconcile(
    ctx: OperatorContext, body: Mapping[str, Any], observed: list[JobInfo], post: Post
) -> float:
    config = ctx.config
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    old = copy.deepcopy(dict(body.get("status") or {}))
    try:
        spec = parse_spec(body)
    except SpecError as err:
        await _problem(ctx, body, post, "InvalidSpec", str(err).replace("\n ", ""), failed=True)
        return config.idle_resync_seconds
    refused = trainjob_problem(spec, enabled=config.trainjobs)
    if refused:
        await _problem(ctx, body, post, "TrainJobsDisabled", refused, failed=True)
        return config.idle_resync_seconds
    facts = await asyncio.to_thread(read_task, config.task_path(spec.task))
    url = store_url(spec, config)
    if not url:
        message = "no store: set spec.store.url or the operator's KUBEVOLVE_STORE"
        await _problem(ctx, body, post, "NoStore", message, failed=False)
        return config.idle_resync_seconds

    refused = policy_problem(spec, namespace, url, cluster=in_cluster())
    if refused:
        await _problem(ctx, body, post, "Refused", refused, failed=True)
        return config.idle_resync_seconds

    run = RunRef(name, namespace, meta.get("uid", ""))
    now = time.time()
    expect = ctx.expect(namespace, run_label(name))
    jobs = expect.view(observed, now)
    ids = {node_id(name, make_key(0))}
    for job in jobs:
        ids |= {node_id(name, job.key), node_id(name, retry_key(job.key))}
    par = spec.parallelism
    slack = par.evaluators + spec.proposers_at_once + (par.proposals_ahead or par.evaluators)
    try:
        store = await asyncio.to_thread(ctx.stores.get, url, namespace)
        snap = await asyncio.to_thread(
            take_snapshot, store, name, spec, facts, ids, scan_indices="nextCandidate" not in old, slack=slack
        )
        due = awaiting_result(jobs, snap.nodes)
        if due and await collect_results(ctx.kube, store, namespace, due, ctx.results_seen):
            snap = await asyncio.to_thread(take_snapshot, store, name, spec, facts, ids, slack=slack)
    except StoreError as err:
        await _problem(ctx, body, post, "StoreUnavailable", f"the store does not answer: {err}", failed=False)
        return STORE_RETRY_SECONDS

    if snap.record.task_facts:  # a step has reported the task from the image that evaluates it
        facts = reported_facts(snap.record.task_facts, facts)
    elif facts.error and (meta.get("uid", name), facts.error) not in ctx.warned:
        ctx.warned.add((meta.get("uid", name), facts.error))
        message = f"the operator cannot read the task ({facts.error}); evaluations wait for the first step"
        post("Warning", "TaskUnreadable", message + " to report it from the run's image")
    refused = trainjob_runtime_problem(spec, judged=facts.judged)
    if refused:
        await _problem(ctx, body, post, "TrainJobRuntimeRefused", refused, failed=True)
        return config.idle_resync_seconds
    plan = make_plan(PlanInput(run, spec, facts, jobs, snap, int(old.get("nextCandidate") or 0), now))
    if facts.error:  # no evaluation is sized from defaults: the first proposal reports the task
        plan.create = [req for req in plan.create if req.role != Role.EVALUATE]

    if plan.create and wanted(ctx, url):
        try:
            await ensure_lab_key(ctx, namespace, url)
        except StoreError as err:
            message = f"the lab's store key cannot be issued: {err}"
            await _problem(ctx, body, post, "StoreUnavailable", message, failed=False)
            return STORE_RETRY_SECONDS
    for nid, error, stage in plan.record_failed:
        if await asyncio.to_thread(record_failed, store, nid, error, stage):
            post("Warning", "CandidateFailed", f"node {nid}: {error}")
    policy = spec.failure_policy or FailurePolicySpec()
    candidates = {n.id: n for n in snap.proposed} | {i: n for i, n in snap.nodes.items() if n is not None}
    await _ensure_peer_policies(ctx, namespace, jobs)
    await asyncio.gather(
        *(_create(ctx, run, spec, facts, req, expect, post, policy, store, candidates) for req in plan.create)
    )

    new = build_status(
        old,
        plan,
        snap,
        facts,
        generation=meta.get("generation"),
        queue=spec.queue_name,
        limit=spec.budget.max_candidates,
        now=time.time(),
    )
    ctx.phases[(namespace, name)] = plan.phase
    patch = status_patch(old, new)
    if patch:
        await ctx.kube.patch_status(namespace, name, patch)
    inputs = [job for job in plan.delete if job.role == Role.EVALUATE]  # a Job's or a TrainJob's
    await asyncio.gather(
        *(ctx.kube.delete(namespace, job.name, job.kind) for job in plan.delete),
        *(ctx.kube.delete(namespace, job.name, "ConfigMap") for job in inputs),
    )
    for job in plan.delete:
        expect.expect_deleted(job.name, time.time())
        ctx.results_seen.discard((namespace, job.name))
    for kind, reason, message in transition_events(old, new):
        post(kind, reason, message)
    terminal = plan.phase in TERMINAL
    await asyncio.to_thread(set_phase, store, snap.record, plan.phase, plan.message if terminal else "")
    await feed_run(ctx, store, namespace, spec, facts, snap, jobs, over=terminal)

    if terminal or (plan.phase == "Suspended" and not any(plan.running.values())):
        return config.idle_resync_seconds
    return min(plan.requeue or config.resync_seconds, config.resync_seconds)


def _train_job_runtime(spec: RunSpec) -> str | None:
    """The runtime a run names (its admins'), None for the run's own."""
    tj = spec.jobs.evaluate.train_job if spec.jobs and spec.jobs.evaluate else None
    return tj.runtime if tj else None


async def _ensure_runtime(ctx: OperatorContext, run: RunRef, spec: RunSpec, facts: TaskFacts) -> None:
    """The run's own TrainingRuntime, created once per process (a create that finds it is a success)."""
    runtime = build_runtime(run, spec, ctx.config, facts)
    key = (run.namespace, runtime["metadata"]["name"])
    if key not in ctx.runtimes:
        await ctx.kube.create(runtime)
        ctx.runtimes.add(key)


async def _ensure_peer_policies(ctx: OperatorContext, namespace: str, jobs: list[JobInfo]) -> None:
    """The peer policy of every running TrainJob this operator process has not made or seen made: a pass that
    ended between creating a TrainJob and its policy (a crash, an API error) leaves one that no later pass
    creates again, whose pods would stay isolated, their ranks never meeting, until its deadline."""
    missing = [
        j
        for j in jobs
        if j.kind == "TrainJob" and not j.done and j.uid and (namespace, j.name) not in ctx.peer_policies
    ]
    await asyncio.gather(
        *(ctx.kube.create(trainjob_peer_policy(namespace, j.name, j.uid)) for j in missing)  # 409: it exists
    )
    ctx.peer_policies.update((namespace, j.name) for j in missing)


async def _create(
    ctx: OperatorContext,
    run: RunRef,
    spec: RunSpec,
    facts: TaskFacts,
    req: JobRequest,
    expect: Expectations,
    post: Post,
    policy: FailurePolicySpec,
    store: Store,
    candidates: dict[str, Node],
) -> None:
    trainjob = uses_trainjob(spec, req.role)
    if req.role == Role.EVALUATE and not await _hand_over(
        ctx, run, spec, facts, req, store, candidates, post
    ):
        return
    if trainjob:
        body = build_trainjob(run, spec, ctx.config, facts, req)
        if not _train_job_runtime(spec):
            await _ensure_runtime(ctx, run, spec, facts)
        uid, created = await ctx.kube.create_trainjob(body)
        # its pods are isolated (the isolation policy selects them) until this lets them reach each other
        await ctx.kube.create(trainjob_peer_policy(run.namespace, body["metadata"]["name"], uid))
        ctx.peer_policies.add((run.namespace, body["metadata"]["name"]))
    else:
        body = build_job(run, spec, ctx.config, facts, req)
        created = await ctx.kube.create(body)
    info = JobInfo(
        name=body["metadata"]["name"],
        role=req.role,
        key=req.key,
        attempt=req.attempt,
        node_id=node_id(run.name, req.key),
        state="active",
        kind="TrainJob" if trainjob else "Job",
        started_at=time.time(),
        queued=bool(spec.queue_name),
    )
    expect.expect_created(info, time.time())
    if created and req.attempt:
        post(
            "Warning",
            "JobRetried",
            f"{req.role} Job of candidate {req.key} failed; attempt {req.attempt + 1} of {policy.max_attempts}",
        )
    if created and req.retry_of:
        post("Normal", "DebugRetry", f"candidate {req.key} retries failed node {req.retry_of} with its error")


async def _hand_over(
    ctx: OperatorContext,
    run: RunRef,
    spec: RunSpec,
    facts: TaskFacts,
    req: JobRequest,
    store: Store,
    candidates: dict[str, Node],
    post: Post,
) -> bool:
    """What an evaluation pod is given, before its Job or TrainJob: the run's judge seed (once), the
    candidate's ConfigMap. False when nothing can evaluate the candidate (not found; too large, recorded as
    failed)."""
    nid = node_id(run.name, req.key)
    node = candidates.get(nid)
    if node is None:
        log.warning(f"{run.namespace}/{run.name}: candidate {nid} is not in the store: not evaluated")
        return False
    name = object_name(run, spec, req)
    try:
        body = evaluation_input(name, run.namespace, run.name, run.uid, record_spec(spec, run.name), node)
    except InputTooLarge as err:
        stage = Stage.FAILED_QUICK if "quick" in (spec.stages or ["quick"]) else Stage.FAILED_FULL
        if await asyncio.to_thread(record_failed, store, nid, str(err), stage, FailureKind.PROGRAM_TOO_LARGE):
            post("Warning", "CandidateFailed", f"node {nid}: {err}")
        return False
    if facts.judged and run.uid not in ctx.seeded:
        await ctx.kube.create_secret(run.namespace, judge_seed_secret(run.namespace, run.name, run.uid))
        ctx.seeded.add(run.uid)
    await ctx.kube.create(body)
    return True
