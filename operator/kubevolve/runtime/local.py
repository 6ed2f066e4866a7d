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
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kubevolve.core.models import Node, RunPhase, RunRecord, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import Task
from kubevolve.loop.agents import Agents
from kubevolve.loop.analyze.analyzer import Analyzer, OfflineAnalyzer, wants_analysis
from kubevolve.loop.budget import BudgetVerdict, StopCause
from kubevolve.loop.engineer.engineer import Engineer
from kubevolve.loop.engineer.pool import EvaluatorPool, EvaluatorUnavailable
from kubevolve.loop.learn.cognition import sync_task_cognition
from kubevolve.loop.learn.embeddings import Embedder
from kubevolve.loop.llm.ensemble import CostAwareBandit
from kubevolve.loop.research.proposal import Proposer
from kubevolve.loop.run_state import RunState
from kubevolve.loop.steps import Candidate, analyze, evaluate, propose, wants_retry
from kubevolve.observe.progress import RunObserver, RunProgress
from kubevolve.runtime import owner
from kubevolve.store.base import NotFound, Store

if TYPE_CHECKING:  # the LLM stack (openai) is imported only by runs that use it
    from kubevolve.loop.engineer.llm_judge import LLMJudge


class Evolution:
    """One local run. Its state (`state`, a RunState) and evaluator pool (`pool`) exist from construction, so
    that what observes the run (`observers`, e.g. the metrics recorder reading the pool's occupancy) can be
    attached before `run()`; `run()` starts the pool and closes it when the run ends."""

    def __init__(
        self,
        spec: RunSpec,
        task: Task,
        store: Store,
        proposer: Proposer,
        workspace: Path,
        *,
        observers: Iterable[RunObserver] = (),
        analyzer: Analyzer | None = None,
        embedder: Embedder | None = None,
        bandit: CostAwareBandit | None = None,
        judge: LLMJudge | None = None,
        pool: EvaluatorPool | None = None,
    ):
        self.spec = spec
        self.task = task
        self.store = store
        self.workspace = workspace
        self.run_id = spec.name or ""
        if analyzer is None and spec.analyzer_mode != "off":
            analyzer = OfflineAnalyzer()
        self.agents = Agents(proposer, analyzer, embedder, bandit, judge=judge)
        self.state = RunState(spec, task, store, self.run_id, embedder=embedder, bandit=bandit)
        self.pool = pool or EvaluatorPool(
            task, spec.parallelism.evaluators, workspace / self.run_id, spec.sandbox
        )
        self.engineer = Engineer(task, self.pool, spec.stages)
        self.observers: list[RunObserver] = list(observers)
        self.progress = RunProgress(self.run_id)
        self._analyses: set[asyncio.Task] = set()
        self._unanalysed: list[Node] = []
        self._retries: deque[Candidate] = deque()  # failed attempts awaiting a debug retry
        self.started_at = time.time()
        self.in_flight = 0
        self.in_flight_hashes: set[str] = set()
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
        """Rebuild the state from the stored nodes (a resumed run continues exactly)."""
        for node in self.state.replay():
            if self.agents.analyzer is not None and wants_analysis(node):
                self._unanalysed.append(node)  # committed just before an interruption
            self.progress.record(node, live=False)

    def _notify(self, node: Node | None) -> None:
        for observer in self.observers:
            observer(self.progress, node)

    def _finish(self, record: RunRecord, phase: RunPhase, message: str) -> RunRecord:
        record.phase, record.message, record.updated_at = phase, message, time.time()
        self.store.put_run(record)
        self.progress.message, self.progress.phase = message, str(phase)
        self._notify(None)
        return record

    # ---- committing ----------------------------------------------------------------------------------
    def _commit(self, candidate: Candidate) -> None:
        """Store a final candidate; it feeds the next selections, its analysis, and a debug retry if due."""
        node = self.store.add_node(candidate.node)
        self.state.observe(node)
        self.progress.record(node)
        if self.agents.analyzer is not None and wants_analysis(node):
            self._analyse(node)
        if wants_retry(candidate, self.spec, self.agents):
            self._retries.append(Candidate(node, candidate.selection))
        self._notify(node)
        self._check_budget()

    def _analyse(self, node: Node) -> None:
        """Analysis runs beside the pipeline: it never holds an evaluation slot or a proposal."""

        async def analyse() -> None:
            island_best = self.state.island_best.get(node.island)
            insight = await analyze(self.store, self.task, self.agents, node, island_best=island_best)
            if insight is not None:
                self.state.observe_insight(insight, node)

        task = asyncio.create_task(analyse())
        self._analyses.add(task)
        task.add_done_callback(self._analyses.discard)

    async def _drain_analyses(self) -> None:
        if self._analyses:
            await asyncio.gather(*self._analyses, return_exceptions=True)

    def _check_budget(self) -> None:
        verdict = self.state.verdict(self.started_at)
        if verdict and not self._stop.is_set():
            self.verdict = verdict
            self._stop.set()

    # ---- pipeline ------------------------------------------------------------------------------------
    def _reserve(self) -> bool:
        self._check_budget()  # e.g. the LLM budget, spent by analyses since the last commit
        if self._stop.is_set():
            return False
        limit = self.spec.budget.max_candidates
        if limit is not None and self.state.observed + self.in_flight >= limit:
            return False
        self.in_flight += 1
        return True

    def _release(self, code_hash: str | None = None) -> None:
        self.in_flight -= 1
        if code_hash:
            self.in_flight_hashes.discard(code_hash)

    async def _propose_one(self) -> Candidate | None:
        """Propose one candidate (a debug retry first, if one waits). Returns it for evaluation, or None if it
        was settled (rejected and committed) here."""
        retry = self._retries.popleft() if self._retries else None
        candidate = await propose(self.state, self.agents, retry_of=retry, in_flight=self.in_flight_hashes)
        if candidate.node.stage.is_final:
            self._release()
            self._commit(candidate)
            return None
        self.in_flight_hashes.add(candidate.node.code_hash)
        return candidate

    async def _settled(self) -> None:
        """Sequential mode (proposalsAhead: 0): wait until nothing is in flight, analyses included, so each
        selection sees every earlier result. Slow, and reproducible against a deterministic endpoint."""
        while self.in_flight or self._analyses:
            await asyncio.sleep(0.005)

    async def _proposer_loop(self, queue: asyncio.Queue[Candidate]) -> None:
        sequential = self.spec.parallelism.proposals_ahead == 0
        while not self._stop.is_set():
            if sequential:
                await self._settled()
            if not self._reserve():
                return
            item = await self._propose_one()
            if item is not None:
                await queue.put(item)

    async def _evaluator_loop(self, queue: asyncio.Queue[Candidate]) -> None:
        while not self._stop.is_set():
            candidate = await queue.get()
            try:
                candidate.node = await evaluate(self.engineer, candidate.node)
            finally:
                self._release(candidate.node.code_hash)
            self.progress.occupancy = self.pool.occupancy()
            self._commit(candidate)
            if (
                self.spec.budget.max_candidates is not None
                and self.state.observed >= self.spec.budget.max_candidates
            ):
                return

    async def _seed(self) -> Node:
        candidate = await propose(self.state, self.agents)
        candidate.node = await evaluate(self.engineer, candidate.node)
        self._commit(candidate)
        return candidate.node

    async def run(self) -> RunRecord:
        record = self._load_or_create_run()
        if self.agents.embedder is not None:
            sync_task_cognition(self.store, self.task, self.agents.embedder)  # once per run, as it starts
        self._replay()
        tasks: list[asyncio.Task] = []
        heartbeat = asyncio.create_task(owner.keep_alive(self.store, record))
        try:
            await self.pool.start()
            self.progress.sandbox = self.pool.mode
            if self.state.observed == 0:
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
            queue: asyncio.Queue[Candidate] = asyncio.Queue(maxsize=max(1, ahead))
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
                self.verdict = BudgetVerdict("every budgeted candidate is done", cause=StopCause.CANDIDATES)
            return self._finish(record, self._phase(), self.verdict.reason if self.verdict else "")
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
                    error = None if task is stopper else task.exception()
                    if error is not None:
                        raise error
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
