"""The engine's steps as functions from store state to store writes: what `kubevolve step ...` runs in a pod.

On Kubernetes the operator runs each step as a Job; every step reads what it needs from the store and writes
its result back, so a step can run anywhere, be retried, and never depends on another process's memory:
- propose: rebuild the sampler from the run's nodes, select, propose, pre-check; store a PROPOSED node
  (or a rejected one). The first proposal of a run is the task's initial program.
- evaluate: run a PROPOSED node through the task's stages; store the final node.
- analyze: write the insight of a finished node.
Each step is idempotent: a node id that is already stored (propose) or already final (evaluate) or already
analysed (analyze) makes it a no-op that returns the stored state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Insight, Node, RunRecord, Stage
from kubevolve.core.spec import RunSpec, parse_run_spec
from kubevolve.core.task import Task, load_task
from kubevolve.loop.agents import Agents
from kubevolve.loop.analyze.analyzer import ANALYSED_STAGES, analyze_and_store
from kubevolve.loop.engineer.engineer import Engineer, precheck
from kubevolve.loop.engineer.pool import EvaluatorPool
from kubevolve.loop.research.candidate import proposal_seed, propose_candidate, seed_node
from kubevolve.loop.run_state import ResearchKit
from kubevolve.loop.sample import make_sampler, sampler_settings
from kubevolve.loop.sample.base import Selection
from kubevolve.store.base import NotFound, Store


class StepError(RuntimeError):
    pass


@dataclass
class StepContext:
    store: Store
    run: RunRecord
    spec: RunSpec
    task: Task


def load_context(store: Store, run_id: str) -> StepContext:
    try:
        run = store.get_run(run_id)
    except NotFound:
        raise StepError(f"run {run_id!r} is not in the store (tenant {store.tenant!r})") from None
    spec = parse_run_spec(run.spec)
    task = load_task(spec.task)
    summary = task.summary()
    if run.task_facts != summary:  # re-read first: keep what the operator wrote meanwhile (phase, message)
        run = store.get_run(run_id)
        run.task_facts = summary
        store.put_run(run)
    return StepContext(store, run, spec, task)


def _existing(store: Store, node_id: str | None) -> Node | None:
    if not node_id:
        return None
    try:
        return store.get_node(node_id)
    except NotFound:
        return None


async def propose_step(
    ctx: StepContext, agents: Agents, *, node_id: str | None = None, retry_of: str | None = None
) -> Node:
    """Store one new candidate of the run and return it (PROPOSED, or final when rejected). With `retry_of`,
    the candidate is a debug retry of that failed node: same parents, and its error as feedback."""
    existing = _existing(ctx.store, node_id)
    if existing is not None:
        return existing
    nodes = list(ctx.store.iter_nodes(ctx.run.id))
    if not nodes:
        return ctx.store.add_node(seed_node(ctx.run.id, ctx.task, node_id))
    sampler_spec, features = sampler_settings(ctx.spec, ctx.task)
    sampler = make_sampler(sampler_spec, features, ctx.spec.seed)
    kit = ResearchKit(ctx.spec, ctx.task, ctx.store, ctx.run.id, agents.embedder, agents.bandit)
    by_id = {}
    for node in nodes:
        sampler.observe(node)
        kit.observe(node)
        by_id[node.id] = node
    failed = None
    if retry_of:
        failed = by_id.get(retry_of)
        if failed is None:
            raise StepError(f"node {retry_of} (to retry) is not in run {ctx.run.id}")
        selection = Selection(
            parents=[by_id[i] for i in failed.parent_ids if i in by_id],
            inspirations=[by_id[i] for i in failed.inspiration_ids if i in by_id],
            island=failed.island,
        )
    else:
        selection = sampler.select()
    if selection is None or not selection.parents:
        raise StepError(f"run {ctx.run.id} has no evaluated node to build on yet")
    seed = proposal_seed(ctx.spec.seed, len(nodes))
    node = await propose_candidate(
        ctx.task,
        ctx.run.id,
        selection,
        sampler.island_for_child(selection),
        agents.proposer,
        seed,
        node_id=node_id,
        context=kit.context(selection),
        retry_of=failed,
    )
    if not node.stage.is_final and precheck(ctx.task, ctx.store, node, selection.parents[0].code) is None:
        reason = kit.novelty_reason(node)
        if reason:
            node.fail(Stage.REJECTED_NOVELTY, FailureKind.NEAR_DUPLICATE, reason)
    return ctx.store.add_node(node)


async def evaluate_step(ctx: StepContext, node_id: str, workspace: Path) -> Node:
    """Evaluate a PROPOSED node in a one-slot pool and store the result."""
    node = ctx.store.get_node(node_id)
    if node.run_id != ctx.run.id:
        raise StepError(f"node {node_id} belongs to run {node.run_id}, not {ctx.run.id}")
    if node.stage.is_final:
        return node
    pool = EvaluatorPool(ctx.task, 1, workspace / ctx.run.id / node.id, ctx.spec.sandbox)
    await pool.start()
    try:
        engineer = Engineer(ctx.task, pool, ctx.store, ctx.spec.stages)
        if not node.parent_ids and engineer.precheck(node, None) is not None:
            ctx.store.update_node(node)
            return node
        node = await engineer.evaluate(node)
    finally:
        await pool.close()
    ctx.store.update_node(node)
    return node


async def analyze_step(ctx: StepContext, node_id: str, agents: Agents) -> Insight | None:
    """Write the insight of a finished node (None for nodes that are not analysed, e.g. rejected ones)."""
    node = ctx.store.get_node(node_id)
    if node.stage not in ANALYSED_STAGES:
        return None
    if node.insight_id:
        return next((i for i in ctx.store.list_insights(ctx.run.id) if i.id == node.insight_id), None)
    return await analyze_and_store(ctx.store, agents.analyzer, ctx.task, node, agents.embedder)


def pending_nodes(store: Store, run_id: str) -> list[Node]:
    return store.list_nodes(run_id, stages=[Stage.PROPOSED])
