"""In-process stand-ins for the pods of `kubevolve step ...`, for tests of the operator's own behaviour and for
the scale benchmark, where a real evaluation would only measure the evaluator.

A fake pod reads the Job's command line with the parser of `kubevolve step` itself and runs the real steps
(loop/steps.py: the same store writes, the same idempotency) with stand-in agents: `ScriptedProposer`, which
makes every proposal a new program deterministically, the offline Analyzer, and `ScoringEvaluator`, which
scores a candidate without running it (by its `seq`, so later candidates score higher, unless a score function
is given). An evaluation pod's step (`--input`) is evaluated the same way and publishes its result as the real
one does (the last line of its output, and its termination-log file); its node carries no `seq` (the pod is
not given one), so the candidate's proposal index stands in for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from kubevolve.cli.step import StepCommand, parse_step_command
from kubevolve.core.kinds import Role
from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import RunSpec, parse_run_spec
from kubevolve.core.task import Task, load_task, run_stages
from kubevolve.loop.agents import Agents
from kubevolve.loop.analyze.analyzer import OfflineAnalyzer
from kubevolve.loop.evaluation_io import EvaluationInput, EvaluationResult
from kubevolve.loop.research.proposal import Proposal, ProposalRequest
from kubevolve.loop.steps import (
    StepContext,
    analyze_step,
    evaluate,
    evaluate_step,
    load_context,
    propose_step,
)
from kubevolve.runtime.kubernetes.names import key_of_node, parse_key
from kubevolve.store import open_store
from kubevolve.store.base import Store

Score = Callable[[Node], float]  # a node -> its score (higher is better)
STAGE_SECONDS = 0.001  # the duration a stand-in evaluation records for each stage


class ScriptedProposer:
    """Appends an assignment of the proposal's seed to the parent's last evolve block: a valid child (the static
    check passes) that no other proposal repeats, at no cost. Not a comment: a comment-only change is the same
    experiment, which the novelty filter rejects."""

    name = "scripted"
    accepts_feedback = False

    async def propose(self, request: ProposalRequest) -> Proposal:
        parent = request.parents[0]
        split = request.task.split(parent.code)
        line = f"scripted_proposal = 0x{request.seed:016x}  # scripted proposal\n"
        blocks = [*split.blocks[:-1], f"{split.blocks[-1]}{line}"]
        return Proposal(
            code=split.join(blocks), motivation=f"scripted proposal {request.seed:016x}", proposer=self.name
        )


class ScoringEvaluator:
    """Evaluates without a sandbox: the node scores `score(node)`, by default its `seq`, in every stage of the
    run (each recorded as taking `STAGE_SECONDS`)."""

    def __init__(self, task: Task, spec: RunSpec, score: Score | None = None):
        self.task, self.spec, self.score = task, spec, score

    async def evaluate(self, node: Node) -> Node:
        value = self.score(node) if self.score is not None else float(node.seq)
        maximize = self.task.spec.direction == "maximize"
        node.metrics = {self.task.spec.metric: value if maximize else -value}
        node.score = self.task.score_of(node.metrics)
        for stage in run_stages(self.task, self.spec.stages):
            node.timings[stage] = STAGE_SECONDS
        node.stage, node.error, node.failure = Stage.EVALUATED, "", None
        return node


class FakeSteps:
    """Runs Jobs' step commands in this process. It owns the stores the commands name (one per URL and tenant,
    shared by the fake pods' threads: SQLiteStore is thread-safe); `close` closes them."""

    def __init__(self, score: Score | None = None):
        self.score = score
        self.agents = Agents(ScriptedProposer(), OfflineAnalyzer())
        self._stores: dict[tuple[str, str], Store] = {}
        self._tasks: dict[tuple[Path, float], Task] = {}  # a pod's image holds its tasks: each read once
        self._lock = threading.Lock()

    def store(self, url: str | None, tenant: str) -> Store:
        if not url:
            raise ValueError("a fake step needs the Job's --store (the operator always passes it)")
        with self._lock:
            store = self._stores.get((url, tenant))
            if store is None:
                store = self._stores[(url, tenant)] = open_store(url, tenant=tenant)
            return store

    def task(self, path: Path) -> Task:
        """The task folder at `path`, read again only when its task.yaml changes."""
        key = (path.resolve(), (path / "task.yaml").stat().st_mtime)
        with self._lock:
            task = self._tasks.get(key)
        if task is None:
            task = load_task(path)
            with self._lock:
                self._tasks[key] = task
        return task

    def run(self, argv: Sequence[str], task_root: Path | None = None) -> str:
        """Run one Job's `kubevolve step ...` command; `task_root`: the pod's working directory. Returns what
        the step prints that matters (an evaluation pod's result line)."""
        command = parse_step_command(argv)
        if command.input_file is not None:
            return self._handed_over(command, task_root)
        store = self.store(command.store_url, command.tenant)
        ctx = load_context(store, command.run_id, task_root, task_loader=self.task)
        asyncio.run(self._step(command, ctx))
        return ""

    def _handed_over(self, command: StepCommand, task_root: Path | None) -> str:
        """An evaluation pod's step: the candidate from its input file, the result published, nothing stored."""
        assert command.input_file is not None
        given = EvaluationInput.from_json(command.input_file.read_text())
        spec = parse_run_spec(given.spec)
        task = self.task(Path(task_root or ".") / spec.task)
        node = given.node()
        key = key_of_node(given.run_id, node.id)
        node.seq = parse_key(key)[0] if key is not None else -1
        node = asyncio.run(evaluate(ScoringEvaluator(task, spec, self.score), node))
        result = EvaluationResult.of(node)
        if command.termination_log is not None:
            command.termination_log.write_text(result.termination_message())
        return result.log_line() + "\n"

    async def _step(self, command: StepCommand, ctx: StepContext) -> None:
        if command.role is Role.PROPOSE:
            await propose_step(
                ctx,
                self.agents,
                node_id=command.node_id,
                retry_of=command.retry_of,
                index=command.index,
                queued_at=command.queued_at,
            )
            return
        assert command.node_id is not None  # the parser requires --node for the other steps
        if command.role is Role.EVALUATE:
            await evaluate_step(ctx, command.node_id, ScoringEvaluator(ctx.task, ctx.spec, self.score))
        else:
            await analyze_step(ctx, command.node_id, self.agents)

    def close(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
