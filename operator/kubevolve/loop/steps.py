"""The engine's steps, written once for both runtimes: propose, evaluate, analyze.

The local runtime (runtime/local.py) keeps one `RunState` in memory for the whole run and pipelines the steps;
a Kubernetes Job runs one step (`kubevolve step ROLE`, the `*_step` functions below), rebuilding the state from
the store first. The runtimes differ only in when they store: a step pod stores a candidate PROPOSED and its
result later, while the local runtime stores a candidate once it is final (so that a killed run resumes with
nothing half-done and nothing evaluated twice).

The `*_step` functions are idempotent given the id of what they produce: a node already stored (propose), a
node already final (evaluate) or already analysed (analyze) is returned as it is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Insight, Node, RunRecord, Stage
from kubevolve.core.spec import RunSpec, parse_run_spec
from kubevolve.core.task import Task, load_task
from kubevolve.errors import KubevolveError
from kubevolve.loop.agents import Agents
from kubevolve.loop.analyze.analyzer import (
    OfflineAnalyzer,
    analyze_and_store,
    is_analysed_rejection,
    island_best,
    wants_analysis,
)
from kubevolve.loop.budget import wants_debug_retry
from kubevolve.loop.engineer.engineer import Evaluator, precheck
from kubevolve.loop.engineer.novelty import fingerprint
from kubevolve.loop.learn.cognition import sync_task_cognition
from kubevolve.loop.offload import off_loop
from kubevolve.loop.research.candidate import proposal_seed, propose_candidate, seed_node
from kubevolve.loop.run_state import RunState
from kubevolve.loop.sample import sampler_settings
from kubevolve.loop.sample.base import Selection
from kubevolve.store.base import NotFound, Store

if TYPE_CHECKING:  # the LLM stack (openai) is imported only by runs that use it
    from kubevolve.loop.engineer.llm_judge import LLMJudge


class StepError(KubevolveError, RuntimeError):
    """A step cannot run: an unknown run or node, or nothing to build on yet."""


@dataclass
class Candidate:
    """A proposed node and the selection it was made from, which a debug retry of it builds on again."""

    node: Node
    selection: Selection | None = None  # None: the run's initial program


# ---- the steps -----------------------------------------------------------------------------------------
async def propose(
    state: RunState,
    agents: Agents,
    *,
    retry_of: Candidate | None = None,
    node_id: str | None = None,
    in_flight: Container[str] = frozenset(),
) -> Candidate:
    """One candidate: select parents (or take back the failed attempt `retry_of`, with its error), ask the
    proposer, pre-check it (static and exact-duplicate checks) and filter repeats of an experiment (the
    novelty filter). The run's first candidate is its initial program. `in_flight`: the code hashes and
    canonical hashes of candidates being evaluated and not stored yet, which count as run already.

    The node comes back PROPOSED (to evaluate) or final (rejected, the reason in `error`). Nothing is stored.
    """
    if retry_of is None and state.observed == 0:
        state.next_proposal()
        node = seed_node(state.run_id, state.task, node_id)
        await off_loop(checked, state.task, state.store, node, None)
        return Candidate(node)
    index = state.next_proposal()
    if retry_of is not None:
        failed, selection = retry_of.node, retry_of.selection
    else:
        failed, selection = None, state.sampler.select(draw=index)
    if selection is None or not selection.parents:
        raise StepError(f"run {state.run_id} has no evaluated node to build on yet")
    node = await propose_candidate(
        state.task,
        state.run_id,
        selection,
        state.sampler.island_for_child(selection),
        agents.proposer,
        proposal_seed(state.spec.seed, index),
        node_id=node_id,
        context=await state.retrieve(selection, failed),
        retry_of=failed,
    )
    rejected = (  # the checks parse the program: off the event loop
        node
        if node.stage.is_final
        else await off_loop(checked, state.task, state.store, node, selection.parents[0].code)
    )
    if rejected is None and node.code_hash in in_flight:
        node.stage, node.failure, node.error = (
            Stage.REJECTED_NOVELTY,
            FailureKind.DUPLICATE,
            "identical to a candidate already being evaluated",
        )
        rejected = node
    if rejected is None:
        reason = state.novelty_reason(node, in_flight)
        if reason:
            node.fail(Stage.REJECTED_NOVELTY, FailureKind.NEAR_DUPLICATE, reason)
    if not node.stage.is_final and agents.judge is not None:
        await judge(state, agents.judge, node, selection)
    return Candidate(node, selection)


def checked(task: Task, store: Store, node: Node, parent_code: str | None) -> Node | None:
    """`precheck` (static and exact-duplicate checks), then the canonical hash of a candidate that passed
    them, which the novelty filter compares: a proposal's CPU work after the LLM, in one call."""
    rejected = precheck(task, store, node, parent_code)
    if rejected is None:
        fingerprint(node)
    return rejected


async def judge(state: RunState, llm_judge: LLMJudge, node: Node, selection: Selection) -> None:
    """The LLM judge's verdict on a candidate that passed every other check: kept on the node with its cost
    and transcript; a rejection settles the node (REJECTED_STATIC, LLM_JUDGE_REJECTED). Its neighbours are
    found off the event loop (they may need the candidate's embedding)."""
    started = time.monotonic()
    neighbours = await off_loop(state.neighbours, node, llm_judge.spec.neighbours, selection)
    verdict = await llm_judge.judge(state.task, node, neighbours)
    node.timings["judge"] = time.monotonic() - started
    node.judge = {"verdict": verdict.verdict, "reason": verdict.reason}
    for key, value in verdict.llm.items():
        node.llm[f"judge_{key}"] = node.llm.get(f"judge_{key}", 0.0) + value
    node.transcript.extend(verdict.transcript)
    if verdict.rejects:
        node.fail(Stage.REJECTED_STATIC, FailureKind.LLM_JUDGE_REJECTED, f"LLM judge: {verdict.reason}")


async def evaluate(evaluator: Evaluator, node: Node) -> Node:
    """Take a PROPOSED node through the task's stages; a final node is returned as it is."""
    if node.stage.is_final:
        return node
    return await evaluator.evaluate(node)


async def analyze(
    store: Store,
    task: Task,
    agents: Agents,
    node: Node,
    *,
    island_best: Node | None = None,
    give_up: asyncio.Event | None = None,
) -> Insight | None:
    """The insight of a stored, finished node, written and linked from the node if it has none yet. None for
    nodes that are not analysed (a rejection with no idea in it, or any node when the analyzer is off). A
    proposal rejected before evaluation is analysed offline, whatever the run's Analyzer. `give_up`: see
    `analyze_and_store`."""
    if agents.analyzer is None:
        return None
    if node.insight_id:
        return next((i for i in store.list_insights(node.run_id) if i.id == node.insight_id), None)
    if not wants_analysis(node):
        return None
    analyzer = OfflineAnalyzer() if is_analysed_rejection(node) else agents.analyzer
    return await analyze_and_store(
        store, analyzer, task, node, agents.embedder, island_best=island_best, give_up=give_up
    )


def wants_retry(candidate: Candidate, spec: RunSpec, agents: Agents) -> bool:
    """A finished candidate goes back to the proposer with its error (`budget.wants_debug_retry`)."""
    return candidate.selection is not None and wants_debug_retry(
        candidate.node,
        spec.engineer,
        proposer_reads_feedback=getattr(agents.proposer, "accepts_feedback", False),
    )


# ---- one step of a stored run (a Kubernetes Job) ---------------------------------------------------------
@dataclass
class StepContext:
    store: Store
    run: RunRecord
    spec: RunSpec
    task: Task


def load_context(
    store: Store,
    run_id: str,
    task_root: Path | None = None,
    *,
    task_loader: Callable[[Path], Task] = load_task,
) -> StepContext:
    """The run as stored, and its task (a relative task path is resolved from `task_root`, by default the
    working directory, which is the operator's task root in a step pod). Records the task's summary in the
    run record, for an operator that cannot read the task itself."""
    try:
        run = store.get_run(run_id)
    except NotFound:
        raise StepError(f"run {run_id!r} is not in the store (tenant {store.tenant!r})") from None
    spec = parse_run_spec(run.spec)
    task = task_loader(Path(task_root or ".") / spec.task)
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


def stored_candidate(state: RunState, node_id: str) -> Candidate:
    """A stored node of the run with its selection rebuilt from the store (its parents and inspirations that
    are still stored, and its island): what a debug retry of it needs."""
    node = _existing(state.store, node_id)
    if node is None or node.run_id != state.run_id:
        raise StepError(f"node {node_id} (to retry) is not in run {state.run_id}")

    def stored(ids: list[str]) -> list[Node]:
        return [n for n in (_existing(state.store, i) for i in ids) if n is not None]

    selection = Selection(
        parents=stored(node.parent_ids), inspirations=stored(node.inspiration_ids), island=node.island
    )
    return Candidate(node, selection)


async def propose_step(
    ctx: StepContext,
    agents: Agents,
    *,
    node_id: str | None = None,
    retry_of: str | None = None,
    index: int | None = None,
    queued_at: float | None = None,
) -> Node:
    """Store one new candidate of the run and return it (PROPOSED, or final when rejected). With `retry_of`,
    the candidate is a debug retry of that failed node: same parents, and its error as feedback. The run's
    first step (its initial program) also stores the task's cognition, once per run. `index`: the proposal's
    index in the run, from which its parents' draw and its seed derive (default: the number of nodes stored);
    proposal pods started together see the same store, so the operator gives each its own. `queued_at`: when
    the operator created the step's Job (epoch seconds): the node records the wall time since
    (`timings["propose_job"]`, pod start-up included), which the operator's pacer counts a proposal as."""
    existing = _existing(ctx.store, node_id)
    if existing is not None:
        return existing
    state = RunState.load(
        ctx.spec, ctx.task, ctx.store, ctx.run.id, embedder=agents.embedder, bandit=agents.bandit
    )
    if index is not None:
        if index < 0:
            raise StepError(f"a proposal index is not negative (got {index})")
        state.proposals = index
    if state.observed == 0 and agents.embedder is not None:
        sync_task_cognition(ctx.store, ctx.task, agents.embedder)
    retry = stored_candidate(state, retry_of) if retry_of else None
    candidate = await propose(state, agents, retry_of=retry, node_id=node_id)
    if queued_at is not None:
        candidate.node.timings["propose_job"] = max(0.0, time.time() - queued_at)
    node = ctx.store.add_node(candidate.node)
    if is_analysed_rejection(node):  # offline and at once: no analysis Job for a refused idea
        await analyze(ctx.store, ctx.task, agents, node)
    return node


async def evaluate_step(ctx: StepContext, node_id: str, evaluator: Evaluator) -> Node:
    """Evaluate a PROPOSED node of the run and store the result."""
    node = ctx.store.get_node(node_id)
    if node.run_id != ctx.run.id:
        raise StepError(f"node {node_id} belongs to run {node.run_id}, not {ctx.run.id}")
    if node.stage.is_final:
        return node
    node = await evaluate(evaluator, node)
    ctx.store.update_node(node)
    return node


async def analyze_step(ctx: StepContext, node_id: str, agents: Agents) -> Insight | None:
    """Write the insight of a finished node (None for nodes that are not analysed)."""
    node = ctx.store.get_node(node_id)
    islands = sampler_settings(ctx.spec, ctx.task)[0].kind == "map_elites"
    best_there = island_best(ctx.store, node.run_id, node.island) if islands and not node.insight_id else None
    return await analyze(ctx.store, ctx.task, agents, node, island_best=best_there)
