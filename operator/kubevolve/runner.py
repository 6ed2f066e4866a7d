"""The local runtime: a steady-state, pipelined evolution loop in one process.

Proposers and evaluators are separate asyncio tasks joined by a bounded queue. Proposers select parents,
propose and pre-check candidates ahead of need; evaluators take them one at a time into a sandboxed slot.
So an evaluation slot never waits for the LLM while proposal capacity suffices, and there is no generation
barrier: every finished candidate is committed to the store at once and feeds the next selection.

Only finished candidates are stored. A run killed at any moment (even SIGKILL) resumes from the store with
every committed node and nothing evaluated twice; the candidates that were in flight are simply proposed anew.
"""

from __future__ import annotations

import asyncio
import difflib
import random
import time
from collections.abc import Callable
from pathlib import Path

from .budget import BudgetVerdict, check_budget
from .engineer.engineer import Engineer
from .engineer.pool import EvaluatorPool
from .models import Node, RunPhase, RunRecord, Stage
from .progress import RunProgress
from .proposers.base import ProposalError, ProposalRequest, Proposer
from .samplers import make_sampler
from .samplers.base import Sampler, Selection
from .spec import FeatureAxis, RunSpec, SamplerSpec
from .store.base import NotFound, Store
from .task import Task

ProgressCallback = Callable[[RunProgress, Node | None], None]


class RunFailed(RuntimeError):
    pass


def sampler_settings(spec: RunSpec, task: Task) -> tuple[SamplerSpec, list[FeatureAxis]]:
    sampler = spec.sampler or task.spec.sampler
    features = sampler.features or task.spec.sampler.features
    return sampler, features or [FeatureAxis(name="code_length", min=0, max=20_000, bins=10)]


def unified_diff(parent: str, child: str) -> str:
    lines = difflib.unified_diff(parent.splitlines(True), child.splitlines(True), "parent", "candidate", n=2)
    return "".join(lines)


def proposal_seed(run_seed: int, index: int) -> int:
    return random.Random(f"{run_seed}:{index}").getrandbits(63)


class Evolution:
    def __init__(
        self,
        spec: RunSpec,
        task: Task,
        store: Store,
        proposer: Proposer,
        workspace: Path,
        on_progress: ProgressCallback | None = None,
    ):
        self.spec = spec
        self.task = task
        self.store = store
        self.proposer = proposer
        self.workspace = workspace
        self.on_progress = on_progress or (lambda progress, node: None)
        self.run_id = spec.name or ""
        self.progress = RunProgress(self.run_id)
        sampler_spec, features = sampler_settings(spec, task)
        self.sampler: Sampler = make_sampler(sampler_spec, features, spec.seed)
        self.target = (
            None
            if spec.budget.target_score is None
            else task.score_of({task.spec.metric: spec.budget.target_score})
        )
        self.started_at = time.time()
        self.committed = 0
        self.in_flight = 0
        self.in_flight_hashes: set[str] = set()
        self.consecutive_failures = 0
        self.proposals = 0
        self.verdict: BudgetVerdict | None = None
        self._stop = asyncio.Event()

    # ---- state ---------------------------------------------------------------------------------------
    def _load_or_create_run(self) -> RunRecord:
        try:
            record = self.store.get_run(self.run_id)
        except NotFound:
            record = RunRecord(id=self.run_id, task=self.task.name, spec=self.spec.to_dict())
        record.phase, record.message, record.updated_at = RunPhase.RUNNING, "", time.time()
        self.store.put_run(record)
        self.started_at = record.created_at
        return record

    def _replay(self) -> None:
        """Rebuild the sampler and counters from the stored nodes (a resumed run continues exactly)."""
        for node in self.store.iter_nodes(self.run_id):
            self.sampler.observe(node)
            self.progress.record(node, live=False)
            self.committed += 1
        self.proposals = self.committed

    def _finish(self, record: RunRecord, phase: RunPhase, message: str) -> RunRecord:
        record.phase, record.message, record.updated_at = phase, message, time.time()
        self.store.put_run(record)
        self.progress.message = message
        self.on_progress(self.progress, None)
        return record

    # ---- committing ----------------------------------------------------------------------------------
    def _commit(self, node: Node) -> None:
        node = self.store.add_node(node)
        self.sampler.observe(node)
        self.committed += 1
        self.progress.record(node)
        if node.stage is Stage.EVALUATED:
            self.consecutive_failures = 0
        elif node.stage is not Stage.REJECTED_NOVELTY:  # a duplicate is not a failure of the candidate
            self.consecutive_failures += 1
        self.on_progress(self.progress, node)
        self._check_budget()

    def _check_budget(self) -> None:
        verdict = check_budget(
            self.spec.budget,
            candidates=self.committed,
            started_at=self.started_at,
            best_score=self.progress.best_score,
            target_score=self.target,
            consecutive_failures=self.consecutive_failures,
        )
        if verdict and not self._stop.is_set():
            self.verdict = verdict
            self._stop.set()

    # ---- pipeline ------------------------------------------------------------------------------------
    def _reserve(self) -> bool:
        limit = self.spec.budget.max_candidates
        if limit is not None and self.committed + self.in_flight >= limit:
            return False
        self.in_flight += 1
        return True

    def _release(self, code_hash: str | None = None) -> None:
        self.in_flight -= 1
        if code_hash:
            self.in_flight_hashes.discard(code_hash)

    async def _propose_one(self) -> tuple[Node, str, Selection] | None:
        """Select, propose and pre-check one candidate. Returns it for evaluation, or None if it was settled."""
        selection = self.sampler.select()
        assert selection is not None, "a seeded run always has a candidate to select"
        parent = selection.parents[0]
        index = self.proposals
        self.proposals += 1
        request = ProposalRequest(
            task=self.task,
            parents=selection.parents,
            inspirations=selection.inspirations,
            seed=proposal_seed(self.spec.seed, index),
        )
        node = Node(
            run_id=self.run_id,
            code=parent.code,
            parent_ids=[p.id for p in selection.parents],
            inspiration_ids=[n.id for n in selection.inspirations],
            island=self.sampler.island_for_child(selection),
            generation=parent.generation + 1,
        )
        started = time.monotonic()
        try:
            proposal = await self.proposer.propose(request)
        except ProposalError as err:
            node.stage, node.error, node.proposer = (
                Stage.REJECTED_STATIC,
                f"proposal failed: {err}",
                self.proposer.name,
            )
            node.timings["propose"] = time.monotonic() - started
            self._release()
            self._commit(node)
            return None
        node.timings["propose"] = time.monotonic() - started
        node.code, node.motivation, node.proposer, node.llm = (
            proposal.code,
            proposal.motivation,
            proposal.proposer,
            proposal.llm,
        )
        node.diff = unified_diff(parent.code, node.code)
        engineer = self.engineer
        rejected = engineer.precheck(node, parent.code)
        if rejected is None and node.code_hash in self.in_flight_hashes:
            node.stage, node.error = (
                Stage.REJECTED_NOVELTY,
                "identical to a candidate already being evaluated",
            )
            rejected = node
        if rejected is not None:
            self._release()
            self._commit(rejected)
            return None
        self.in_flight_hashes.add(node.code_hash)
        return node, parent.code, selection

    async def _proposer_loop(self, queue: asyncio.Queue) -> None:
        while not self._stop.is_set():
            if not self._reserve():
                return
            item = await self._propose_one()
            if item is not None:
                await queue.put(item)

    async def _evaluator_loop(self, queue: asyncio.Queue) -> None:
        while not self._stop.is_set():
            node, _parent_code, _selection = await queue.get()
            try:
                node = await self.engineer.evaluate(node)
            finally:
                self._release(node.code_hash)
            self.progress.occupancy = self.pool.occupancy()
            self._commit(node)
            if (
                self.spec.budget.max_candidates is not None
                and self.committed >= self.spec.budget.max_candidates
            ):
                return

    async def _seed(self) -> Node:
        node = Node(run_id=self.run_id, code=self.task.initial_code, motivation="the task's initial program")
        node.proposer = "initial"
        node = await self.engineer.run(node, None)
        self._commit(node)
        return node

    async def run(self) -> RunRecord:
        record = self._load_or_create_run()
        self._replay()
        self.pool = EvaluatorPool(
            self.task, self.spec.parallelism.evaluators, self.workspace / self.run_id, self.spec.sandbox
        )
        self.engineer = Engineer(self.task, self.pool, self.store, self.spec.stages)
        tasks: list[asyncio.Task] = []
        try:
            await self.pool.start()
            self.progress.sandbox = self.pool.mode
            if self.committed == 0:
                seed = await self._seed()
                if seed.stage is not Stage.EVALUATED:
                    return self._finish(record, RunPhase.FAILED, f"the initial program failed: {seed.error}")
            self._check_budget()
            if self._stop.is_set():
                return self._finish(record, self._phase(), self.verdict.reason if self.verdict else "")
            self.pool.reset_accounting()
            ahead = self.spec.parallelism.proposals_ahead or self.spec.parallelism.evaluators
            queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, ahead))
            tasks = [
                asyncio.create_task(self._proposer_loop(queue))
                for _ in range(self.spec.parallelism.proposers)
            ]
            tasks += [
                asyncio.create_task(self._evaluator_loop(queue))
                for _ in range(self.spec.parallelism.evaluators)
            ]
            await self._wait_for_stop(tasks)
            if not self._stop.is_set():
                self.verdict = BudgetVerdict("every budgeted candidate is done")
            return self._finish(record, self._phase(), self.verdict.reason)
        except (asyncio.CancelledError, KeyboardInterrupt):
            self._finish(record, RunPhase.STOPPED, "interrupted; `kubevolve run` again resumes it")
            raise
        except Exception as err:
            self._finish(record, RunPhase.FAILED, f"internal error: {type(err).__name__}: {err}")
            raise
        finally:
            await _cancel_all(tasks)
            await self.pool.close()

    async def _wait_for_stop(self, tasks: list[asyncio.Task]) -> None:
        """Until the budget stops the run, every worker is done, or one fails (its error is raised)."""
        stopper = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set() and not all(t.done() for t in tasks):
                deadline = self.spec.budget.deadline_seconds
                timeout = (
                    None if deadline is None else max(0.0, self.started_at + deadline - time.time()) + 0.01
                )
                done, _ = await asyncio.wait(
                    [stopper, *(t for t in tasks if not t.done())],
                    timeout=timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in done:
                    if task is not stopper and task.exception():
                        raise task.exception()
                self._check_budget()
        finally:
            stopper.cancel()

    def _phase(self) -> RunPhase:
        return RunPhase.FAILED if self.verdict and self.verdict.failed else RunPhase.SUCCEEDED


async def _cancel_all(tasks: list[asyncio.Task]) -> None:
    """Cancel and reap the pipeline's tasks; cancel again any that absorbed a cancellation."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as lost
