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
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, RunPhase, RunRecord, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import Task
from kubevolve.loop.analyze.analyzer import ANALYSED_STAGES, Analyzer, OfflineAnalyzer, analyze_and_store
from kubevolve.loop.budget import BudgetVerdict, check_budget
from kubevolve.loop.engineer.engineer import Engineer
from kubevolve.loop.engineer.pool import EvaluatorPool, EvaluatorUnavailable
from kubevolve.loop.llm.ensemble import CostAwareBandit
from kubevolve.loop.research.candidate import proposal_seed, propose_candidate, seed_node
from kubevolve.loop.research.proposal import Proposer
from kubevolve.loop.run_state import ResearchKit
from kubevolve.loop.sample import make_sampler, sampler_settings
from kubevolve.loop.sample.base import Sampler, Selection
from kubevolve.observe.progress import RunProgress
from kubevolve.runtime import owner
from kubevolve.store.base import NotFound, Store

ProgressCallback = Callable[[RunProgress, Node | None], None]


class Evolution:
    def __init__(
        self,
        spec: RunSpec,
        task: Task,
        store: Store,
        proposer: Proposer,
        workspace: Path,
        on_progress: ProgressCallback | None = None,
        analyzer: Analyzer | None = None,
        embedder=None,
        bandit: CostAwareBandit | None = None,
    ):
        self.spec = spec
        self.task = task
        self.store = store
        self.proposer = proposer
        self.workspace = workspace
        self.on_progress = on_progress or (lambda progress, node: None)
        self.analyzer: Analyzer = analyzer or OfflineAnalyzer()
        self._analyses: set[asyncio.Task] = set()
        self._unanalysed: list[Node] = []
        self.run_id = spec.name or ""
        self.kit = ResearchKit(spec, task, store, self.run_id, embedder, bandit)
        self._retries: deque[tuple[Node, Selection]] = deque()  # failed attempts awaiting a debug retry
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
        owner.claim(record)
        self.store.put_run(record)
        self.started_at = record.created_at
        return record

    def _replay(self) -> None:
        """Rebuild the sampler and counters from the stored nodes (a resumed run continues exactly)."""
        for node in self.store.iter_nodes(self.run_id):
            if node.stage in ANALYSED_STAGES and not node.insight_id:
                self._unanalysed.append(node)  # committed just before an interruption
            self.sampler.observe(node)
            self.kit.observe(node)
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
        self.kit.observe(node)
        self.committed += 1
        self.progress.record(node)
        if node.stage in ANALYSED_STAGES:
            self._analyse(node)
        if node.stage is Stage.EVALUATED:
            self.consecutive_failures = 0
        elif node.stage is not Stage.REJECTED_NOVELTY:  # a duplicate is not a failure of the candidate
            self.consecutive_failures += 1
        self.on_progress(self.progress, node)
        self._check_budget()

    def _analyse(self, node: Node) -> None:
        """Analysis runs beside the pipeline: it never holds an evaluation slot or a proposal."""

        async def analyse() -> None:
            insight = await analyze_and_store(self.store, self.analyzer, self.task, node, self.kit.embedder)
            self.kit.observe_insight(insight, node)

        task = asyncio.create_task(analyse())
        self._analyses.add(task)
        task.add_done_callback(self._analyses.discard)

    async def _drain_analyses(self) -> None:
        if self._analyses:
            await asyncio.gather(*self._analyses, return_exceptions=True)

    def _check_budget(self) -> None:
        verdict = check_budget(
            self.spec.budget,
            candidates=self.committed,
            started_at=self.started_at,
            best_score=self.progress.best_score,
            target_score=self.target,
            consecutive_failures=self.consecutive_failures,
            llm_cost=self.kit.spent_usd,
        )
        if verdict and not self._stop.is_set():
            self.verdict = verdict
            self._stop.set()

    # ---- pipeline ------------------------------------------------------------------------------------
    def _reserve(self) -> bool:
        self._check_budget()  # e.g. the LLM budget, spent by analyses since the last commit
        if self._stop.is_set():
            return False
        limit = self.spec.budget.max_candidates
        if limit is not None and self.committed + self.in_flight >= limit:
            return False
        self.in_flight += 1
        return True

    def _release(self, code_hash: str | None = None) -> None:
        self.in_flight -= 1
        if code_hash:
            self.in_flight_hashes.discard(code_hash)

    def _wants_retry(self, node: Node) -> bool:
        """A failed static check or quick stage goes back to a proposer that can read the error."""
        return (
            getattr(self.proposer, "accepts_feedback", False)
            and node.stage in (Stage.REJECTED_STATIC, Stage.FAILED_QUICK)
            and node.attempt < self.spec.engineer.debug_retries
        )

    async def _propose_one(self) -> tuple[Node, Selection] | None:
        """Select (or take a debug retry), propose and pre-check one candidate. Returns it for evaluation, or
        None if it was settled (rejected and committed) here."""
        if self._retries:
            failed, selection = self._retries.popleft()
        else:
            failed, selection = None, self.sampler.select()
        assert selection is not None, "a seeded run always has a candidate to select"
        seed = proposal_seed(self.spec.seed, self.proposals)
        self.proposals += 1
        node = await propose_candidate(
            self.task,
            self.run_id,
            selection,
            self.sampler.island_for_child(selection),
            self.proposer,
            seed,
            context=self.kit.context(selection),
            retry_of=failed,
        )
        rejected = node if node.stage.is_final else self.engineer.precheck(node, selection.parents[0].code)
        if rejected is None and node.code_hash in self.in_flight_hashes:
            node.stage, node.failure, node.error = (
                Stage.REJECTED_NOVELTY,
                FailureKind.DUPLICATE,
                "identical to a candidate already being evaluated",
            )
            rejected = node
        if rejected is None:
            reason = self.kit.novelty_reason(node)
            if reason:
                node.fail(Stage.REJECTED_NOVELTY, FailureKind.NEAR_DUPLICATE, reason)
                rejected = node
        if rejected is not None:
            self._release()
            self._commit(rejected)
            if self._wants_retry(rejected):
                self._retries.append((rejected, selection))
            return None
        self.in_flight_hashes.add(node.code_hash)
        return node, selection

    async def _settled(self) -> None:
        """Sequential mode (proposalsAhead: 0): wait until nothing is in flight, analyses included, so each
        selection sees every earlier result. Slow, and reproducible against a deterministic endpoint."""
        while self.in_flight or self._analyses:
            await asyncio.sleep(0.005)

    async def _proposer_loop(self, queue: asyncio.Queue) -> None:
        sequential = self.spec.parallelism.proposals_ahead == 0
        while not self._stop.is_set():
            if sequential:
                await self._settled()
            if not self._reserve():
                return
            item = await self._propose_one()
            if item is not None:
                await queue.put(item)

    async def _evaluator_loop(self, queue: asyncio.Queue) -> None:
        while not self._stop.is_set():
            node, selection = await queue.get()
            try:
                node = await self.engineer.evaluate(node)
            finally:
                self._release(node.code_hash)
            self.progress.occupancy = self.pool.occupancy()
            self._commit(node)
            if self._wants_retry(node):
                self._retries.append((node, selection))
            if (
                self.spec.budget.max_candidates is not None
                and self.committed >= self.spec.budget.max_candidates
            ):
                return

    async def _seed(self) -> Node:
        node = await self.engineer.run(seed_node(self.run_id, self.task), None)
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
        heartbeat = asyncio.create_task(owner.keep_alive(self.store, record))
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
            for node in self._unanalysed:
                self._analyse(node)
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
            await _cancel_all(tasks)
            await self._drain_analyses()
            if not self._stop.is_set():
                self.verdict = BudgetVerdict("every budgeted candidate is done")
            return self._finish(record, self._phase(), self.verdict.reason)
        except (asyncio.CancelledError, KeyboardInterrupt):
            self._finish(record, RunPhase.STOPPED, "interrupted; `kubevolve run` again resumes it")
            raise
        except EvaluatorUnavailable as err:  # the task's evaluator is at fault, not kubevolve: no "internal"
            self._finish(record, RunPhase.FAILED, str(err))
            raise
        except Exception as err:
            self._finish(record, RunPhase.FAILED, f"internal error: {type(err).__name__}: {err}")
            raise
        finally:
            await _cancel_all([*tasks, *self._analyses, heartbeat])
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
