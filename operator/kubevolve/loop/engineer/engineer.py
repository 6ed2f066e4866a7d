"""The Engineer: the checks that need no evaluator (`precheck`: static and exact-duplicate) and the task's
stages in a sandboxed slot (`Engineer.evaluate`).

Every way a candidate can go wrong ends as a node in a final stage with its `failure` kind, a one-line `error`
and the log tail; nothing here raises for a bad candidate. Only a broken task (an evaluator that cannot even
be imported) raises.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import RunSpec, StageName
from kubevolve.core.task import Task, run_stages
from kubevolve.loop.engineer.metric_check import MetricsError, validate_metrics
from kubevolve.loop.engineer.pool import EvaluatorPool
from kubevolve.loop.engineer.static_check import static_check
from kubevolve.store.base import Store

FAILED_STAGE = {"quick": Stage.FAILED_QUICK, "full": Stage.FAILED_FULL}


def threshold_failure(task: Task, stage: StageName, metrics: dict[str, float]) -> str | None:
    """Early rejection: the first threshold of this stage the metrics miss, described."""
    spec = task.spec.stages[stage]
    for name, bound in spec.reject_below.items():
        if name in metrics and metrics[name] < bound:
            return f"{stage} stage: {name} = {metrics[name]:.6g} is below the threshold {bound:g}"
    for name, bound in spec.reject_above.items():
        if name in metrics and metrics[name] > bound:
            return f"{stage} stage: {name} = {metrics[name]:.6g} is above the threshold {bound:g}"
    return None


def precheck(task: Task, store: Store, node: Node, parent_code: str | None) -> Node | None:
    """Static and duplicate checks, which need no evaluator. Returns the node, rejected, or None if it passes."""
    started = time.monotonic()
    problem = static_check(task, node.code, parent_code if parent_code is not None else node.code)
    node.timings["static"] = time.monotonic() - started
    if problem:
        return node.fail(Stage.REJECTED_STATIC, problem.kind, problem.message)
    duplicate = store.find_by_code_hash(node.run_id, node.code_hash)
    if duplicate is not None and duplicate.id != node.id:
        message = f"identical to node {duplicate.id} (same program text)"
        return node.fail(Stage.REJECTED_NOVELTY, FailureKind.DUPLICATE, message)
    return None


class Evaluator(Protocol):
    """Takes a PROPOSED node through the task's stages; it comes back evaluated or failed, never raises for a
    bad candidate. The Engineer is one; the test kit has a stand-in that scores without a sandbox."""

    async def evaluate(self, node: Node) -> Node: ...


class Engineer:
    """Evaluates candidates in the slots of a pool, through the run's stages of the task."""

    def __init__(self, task: Task, pool: EvaluatorPool, stages: Sequence[StageName] | None = None):
        self.task = task
        self.pool = pool
        self.stages = run_stages(task, stages)

    async def evaluate(self, node: Node) -> Node:
        """Run the stages in one slot; the node leaves evaluated or failed at the stage that stopped it."""
        async with self.pool.slot() as slot:
            for stage in self.stages:
                outcome = await slot.run_stage(self.task, node.code, stage, self.task.spec.stages[stage])
                node.timings[stage] = outcome.duration
                node.log_tail = outcome.log_tail
                failed = FAILED_STAGE[stage]
                if not outcome.ok:
                    kind = outcome.failure or FailureKind.CRASHED
                    return node.fail(failed, kind, f"{stage} stage: {outcome.error}")
                try:
                    metrics, artifacts = validate_metrics(outcome.result, self.task.spec.metric)
                except MetricsError as err:
                    return node.fail(failed, FailureKind.BAD_METRICS, f"{stage} stage: bad metrics: {err}")
                node.metrics, node.artifacts = metrics, artifacts
                node.score = self.task.score_of(metrics)
                reason = threshold_failure(self.task, stage, metrics)
                if reason:
                    return node.fail(failed, FailureKind.EARLY_REJECTION, reason)
        node.stage, node.error, node.failure = Stage.EVALUATED, "", None
        return node


class OneSlotEngineer:
    """An Engineer with a fresh one-slot pool per evaluation, under `workspace/RUN/NODE`: how a step pod, which
    evaluates one node and exits, evaluates. `zygote_socket`: the pod layout (the candidate's side is another
    container of the pod, whose zygote connects there; `workspace` is then in the volume both share)."""

    def __init__(self, task: Task, spec: RunSpec, workspace: Path, *, zygote_socket: Path | None = None):
        self.task, self.spec, self.workspace = task, spec, workspace
        self.zygote_socket = zygote_socket

    async def evaluate(self, node: Node) -> Node:
        pool = EvaluatorPool(
            self.task,
            1,
            self.workspace / node.run_id / node.id,
            self.spec.sandbox,
            stages=self.spec.stages,
            zygote_socket=self.zygote_socket,
            shared_root=None if self.zygote_socket is None else self.workspace,
        )
        await pool.start()
        try:
            return await Engineer(self.task, pool, self.spec.stages).evaluate(node)
        finally:
            await pool.close()
