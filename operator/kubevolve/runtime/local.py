"""The local runtime: a steady-state, pipelined evolution loop in one process.

Proposals and evaluations are separate asyncio tasks joined by a queue of ready candidates. A dispatcher
starts proposals (each selects its parents, asks the proposer and pre-checks the candidate) so that about as
many are in flight as the evaluators will need while they are made (`loop/pacing.py`, Little's law: about
W x LLM latency / evaluation time, measured as the run goes), at most `parallelism.proposers` at once
(default `llm.maxConcurrency`); a proposal selects its parents as it starts, from everything stored by then;
evaluators take ready candidates one at a time into a sandboxed slot. So an evaluation slot never waits for
the LLM while proposal capacity suffices, each proposal selects from a store at most about one proposal time
old, and there is no generation barrier: every finished candidate is committed to the store at once and
feeds the next selection.

Only finished candidates are stored. A run killed at any moment (even SIGKILL) resumes from the store with
every committed node and nothing evaluated twice; the candidates that were in flight are simply proposed anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, RunPhase, RunRecord, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import Task
from kubevolve.loop.agents import Agents
from kubevolve.loop.analyze.analyzer import Analyzer, OfflineAnalyzer, wants_analysis
from kubevolve.loop.budget import BudgetVerdict, StopCause
from kubevolve.loop.engineer.engineer import Engineer
from kubevolve.loop.engineer.pool import EvaluatorPool, EvaluatorUnavailable
from kubevolve.loop.learn.cognition import sync_task_cognition
from kubevolve.loop.learn.embeddings import Embedder, EmbeddingService
from kubevolve.loop.llm.ensemble import CostAwareBandit
from kubevolve.loop.offload import off_loop
from kubevolve.loop.pacing import Pacer
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
            task, spec.parallelism.evaluators, workspace / self.run_id, spec.sandbox, stages=spec.stages
        )
        self.engineer = Engineer(task, self.pool, spec.stages)
        self.observers: list[RunObserver] = list(observers)
        self.progress = RunProgress(self.run_id)
        self._analyses: set[asyncio.Task] = set()
        self._unanalysed: list[Node] = []
        self._retries: deque[Candidate] = deque()  # failed attempts awaiting a debug retry
        self.started_at = time.time()
        self.in_flight = 0
        self.in_flight_hashes: set[str] = set()  # code and canonical hashes of candidates being evaluated
        self.verdict: BudgetVerdict | None = None
        self._stop = asyncio.Event()
        self._retrieval: asyncio.Task[None] | None = None  # the model's load and the cognition's sync
        self.pacer = Pacer(spec.parallelism.evaluators)
        self._ready: asyncio.Queue[Candidate] = asyncio.Queue()  # proposed, waiting for a slot
        self._proposing: set[asyncio.Task[None]] = set()
        self._proposal_starts: dict[asyncio.Task[None], float] = {}  # proposals under way -> when started
        self._busy: dict[int, float] = {}  # evaluator -> when its evaluation started (monotonic)
        self._idle = 0  # evaluators waiting for a candidate
        self._wake = asyncio.Event()  # something the dispatcher counts changed
        self._failure: BaseException | None = None  # what a proposal raised: the run fails with it
        self._first = True  # no proposed candidate's result is stored yet: every proposal builds on the seed
        self._ending = asyncio.Event()  # set as the run drains: analyses stop waiting for the embedding model

    @classmethod
    def of_agents(
        cls,
        spec: RunSpec,
        task: Task,
        store: Store,
        agents: Agents,
        workspace: Path,
        *,
        observers: Iterable[RunObserver] = (),
        pool: EvaluatorPool | None = None,
    ) -> Evolution:
        """The run of what `make_agents` (or a caller's own Agents) built: each of its roles goes in."""
        return cls(
            spec,
            task,
            store,
            agents.proposer,
            workspace,
            observers=observers,
            analyzer=agents.analyzer,
            embedder=agents.embedder,
            bandit=agents.bandit,
            judge=agents.judge,
            pool=pool,
        )

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
        """Rebuild the state from the stored nodes (a resumed run continues exactly); the pacer starts from
        the proposal and evaluation times they record."""
        for node in self.state.replay():
            if self.agents.analyzer is not None and wants_analysis(node):
                self._unanalysed.append(node)  # committed just before an interruption
            self.progress.record(node, live=False)
            self.pacer.replay(node)
        self._first = self.state.observed <= 1

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
            insight = await analyze(
                self.store, self.task, self.agents, node, island_best=island_best, give_up=self._ending
            )
            if insight is not None:
                self.state.observe_insight(insight, node)

        task = asyncio.create_task(analyse())
        self._analyses.add(task)
        task.add_done_callback(self._analyses.discard)

    async def _drain_analyses(self) -> None:
        """Finish the analyses under way; those waiting for the embedding model's load store their insight
        unembedded rather than hold the run's exit (`analyze_and_store`)."""
        self._ending.set()
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

    def _release(self, node: Node | None = None) -> None:
        self.in_flight -= 1
        if node is not None:
            self.in_flight_hashes.discard(node.code_hash)
            self.in_flight_hashes.discard(node.canonical_hash)

    async def _propose_one(self) -> Candidate:
        """Propose one candidate (a debug retry first, if one waits). A candidate rejected here (its node
        final) is committed here; the caller evaluates the others."""
        retry = self._retries.popleft() if self._retries else None
        candidate = await propose(self.state, self.agents, retry_of=retry, in_flight=self.in_flight_hashes)
        if candidate.node.stage.is_final:
            self._release()
            self._commit(candidate)
            return candidate
        self.in_flight_hashes.update(
            h for h in (candidate.node.code_hash, candidate.node.canonical_hash) if h
        )
        return candidate

    async def _propose_ready(self, started: float) -> None:
        """One proposal, timed for the pacer from `started`; a candidate to evaluate joins the ready queue. A
        proposal the LLM endpoint failed tells the pacer nothing: neither how long proposals take (errors come
        back fast) nor how many reach a slot (proposing more would only press a failing endpoint harder)."""
        candidate = await self._propose_one()
        node = candidate.node
        if node.failure is not FailureKind.LLM_ERROR:
            self.pacer.proposed(time.monotonic() - started, evaluated=not node.stage.is_final)
        if not node.stage.is_final:
            self._ready.put_nowait(candidate)

    async def _settled(self) -> None:
        """Sequential mode (proposalsAhead: 0): wait until nothing is in flight, analyses included, so each
        selection sees every earlier result, and until retrieval is ready, so that every proposal is told what
        retrieval finds. Slow, and reproducible against a deterministic endpoint."""
        while self.in_flight or self._analyses or (self._retrieval and not self._retrieval.done()):
            await asyncio.sleep(0.005)

    def _start_retrieval(self) -> None:
        """As the run starts, in the background: load the embedding model, then store the task's cognition.
        Proposals made meanwhile go without retrieved cognition and insights (RunState.retrieval_ready)."""
        embedder = self.agents.embedder
        if embedder is None:
            return

        async def prepare() -> None:
            if isinstance(embedder, EmbeddingService):
                embedder.load_in_background()
                await embedder.wait_ready()
            await off_loop(sync_task_cognition, self.store, self.task, embedder)
            self.state.retrieval_ready = True

        self.state.retrieval_ready = False
        self._retrieval = asyncio.create_task(prepare())

    def _to_start(self) -> int:
        """Proposals to start now, at most `proposers` under way: as many as bring those in flight (being
        made or ready) to `proposalsAhead` beyond the proposers when the spec fixes it, else to the pacer's
        bound (which the dispatcher may still hold for the first result)."""
        par, proposing, ready = self.spec.parallelism, len(self._proposing), self._ready.qsize()
        room = self.spec.proposers_at_once - proposing
        if par.proposals_ahead:
            return min(room, self.spec.proposers_at_once + par.proposals_ahead - proposing - ready)
        busy, now = list(self._busy.values()), time.monotonic()
        wanted = self.pacer.wanted(self._idle, busy, now, self._oldest(), first=self._first)
        return min(room, self.pacer.starts(wanted, proposing, ready))

    def _oldest(self) -> float | None:
        """When the oldest proposal under way started (None: none is)."""
        return min(self._proposal_starts.values(), default=None)

    def _start_proposal(self) -> None:
        """A proposal task, its start time recorded at once: the dispatcher's next wake-up depends on the age
        of the oldest proposal under way, which a task not yet running would otherwise not show (the first
        wave then slept until it came back, and no second candidate per slot was proposed meanwhile)."""
        started = time.monotonic()
        task = asyncio.create_task(self._propose_ready(started))
        self._proposal_starts[task] = started
        self._proposing.add(task)
        task.add_done_callback(self._proposal_done)

    def _proposal_done(self, task: asyncio.Task[None]) -> None:
        self._proposing.discard(task)
        self._proposal_starts.pop(task, None)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
        self._wake.set()

    async def _dispatcher(self) -> None:
        """Start proposals while fewer are in flight than wanted (at most `proposers` at once), as long as the
        budget allows; then sleep until a count changes or a running evaluation comes within a proposal time
        of its end. Until a proposed candidate's result is stored, proposals due just before the first one are
        held for it (`Pacer.hold`). Sequential mode: one proposal at a time, once everything before it is
        settled."""
        par = self.spec.parallelism
        while not self._stop.is_set():
            if self._failure is not None:
                raise self._failure
            if par.proposals_ahead == 0:
                await self._settled()
                if not self._reserve():
                    return
                await self._propose_ready(time.monotonic())
                continue
            self._wake.clear()
            starts, delay = self._to_start(), None
            paced_first = starts > 0 and self._first and par.proposals_ahead is None
            hold = self.pacer.hold(list(self._busy.values()), time.monotonic()) if paced_first else 0.0
            if hold > 0:
                delay = hold  # the first result is about to be stored: the proposals build on it
            else:
                for _ in range(max(starts, 0)):
                    if not self._reserve():
                        break
                    self._start_proposal()
                if par.proposals_ahead is None:
                    delay = self.pacer.next_need(list(self._busy.values()), time.monotonic(), self._oldest())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _evaluator_loop(self, index: int) -> None:
        while not self._stop.is_set():
            self._idle += 1
            self._wake.set()
            try:
                candidate = await self._ready.get()
            finally:
                self._idle -= 1
            started = self._busy[index] = time.monotonic()
            self._wake.set()
            try:
                candidate.node = await evaluate(self.engineer, candidate.node)
            finally:
                self._release(candidate.node)
                del self._busy[index]
            self.pacer.evaluated(time.monotonic() - started)
            self.progress.occupancy = self.pool.occupancy()
            self._commit(candidate)
            self._first = False
            self._wake.set()
            if (
                self.spec.budget.max_candidates is not None
                and self.state.observed >= self.spec.budget.max_candidates
            ):
                return

    async def _seed(self) -> Node:
        candidate = await propose(self.state, self.agents)
        started = time.monotonic()
        candidate.node = await evaluate(self.engineer, candidate.node)
        self.pacer.evaluated(time.monotonic() - started)
        self._commit(candidate)
        return candidate.node

    async def run(self) -> RunRecord:
        self._start_retrieval()
        record = self._load_or_create_run()
        self._replay()
        tasks: list[asyncio.Task] = [] if self._retrieval is None else [self._retrieval]
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
            tasks.append(asyncio.create_task(self._dispatcher()))
            tasks += [
                asyncio.create_task(self._evaluator_loop(i)) for i in range(self.spec.parallelism.evaluators)
            ]
            await self._wait_for_stop(tasks)
            await _cancel_all([*tasks, *self._proposing])
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
            await _cancel_all([*tasks, *self._proposing, *self._analyses, heartbeat])
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
