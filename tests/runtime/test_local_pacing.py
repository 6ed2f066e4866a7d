"""Pacing in the local runtime: with a scripted slow LLM and a scripted evaluation time, proposals are made
when the evaluators will need them, so later proposals build on evaluated children (not on the initial
program, as when the first wave reserved the whole budget) while the evaluators stay busy."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import load_task
from kubevolve.loop.analyze.analyzer import Analysis, AnalysisRequest, Analyzer
from kubevolve.loop.engineer.pool import StageOutcome
from kubevolve.loop.pacing import buffer_for, initial_children
from kubevolve.loop.research.proposal import Proposal, ProposalError, ProposalRequest
from kubevolve.runtime.local import Evolution
from tests.kit.toy_task import write_task

TASK = """\
name: paced
description: Scores the program's one constant.
metric: score
stages:
  quick: {timeoutSeconds: 30, resources: {memoryMb: 256}}
checks: {requiredNames: [VALUE]}
sampler: {kind: greedy, numInspirations: 0}
"""
PROGRAM = "# EVOLVE-BLOCK-START\nVALUE = 0\nPROPOSAL = 0\n# EVOLVE-BLOCK-END\n"
LLM_SECONDS, EVAL_SECONDS, SLOTS = 0.1, 0.4, 8


def value_of(code: str) -> int:
    match = re.search(r"VALUE = (-?\d+)", code)
    assert match, code
    return int(match.group(1))


class SlowLLM:
    """A scripted Researcher: waits LLM_SECONDS, then steps the parent's constant up by a random amount (and
    numbers the proposal, so that no two are the same experiment)."""

    name = "scripted"

    def __init__(self, seconds: float = LLM_SECONDS) -> None:
        self.rng = random.Random(0)
        self.proposals = itertools.count(1)
        self.seconds = seconds

    async def propose(self, request: ProposalRequest) -> Proposal:
        await asyncio.sleep(self.seconds)
        parent = value_of(request.parents[0].code)
        code = f"# EVOLVE-BLOCK-START\nVALUE = {parent + self.rng.randint(1, 100)}\nPROPOSAL = {next(self.proposals)}\n# EVOLVE-BLOCK-END\n"
        return Proposal(code=code, motivation="step VALUE", proposer=self.name)


@dataclass
class TimedSlot:
    pool: TimedPool

    async def run_stage(self, task: Any, code: str, stage: str, spec: Any) -> StageOutcome:
        """EVAL_SECONDS ± 25% (by the constant, so reproducible), then the constant as the score."""
        value = value_of(code)
        seconds = EVAL_SECONDS * (1 + random.Random(value).uniform(-0.25, 0.25))
        started = time.monotonic()
        await asyncio.sleep(seconds)
        self.pool.spans.append((started, time.monotonic()))
        return StageOutcome(ok=True, result={"score": float(value)}, duration=seconds)


class TimedPool:
    """An evaluator pool without processes: SLOTS slots, each busy for the scripted evaluation time; `spans`
    records each evaluation's start and end for the occupancy."""

    mode = "none"

    def __init__(self, slots: int):
        self.size = slots
        self._free: asyncio.Queue[TimedSlot] | None = None
        self.spans: list[tuple[float, float]] = []
        self.counting_from = 0

    async def start(self) -> None:
        self._free = asyncio.Queue()
        for _ in range(self.size):
            self._free.put_nowait(TimedSlot(self))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[TimedSlot]:
        assert self._free is not None
        slot = await self._free.get()
        try:
            yield slot
        finally:
            self._free.put_nowait(slot)

    def reset_accounting(self) -> None:
        self.counting_from = len(self.spans)  # the initial program's evaluation is not the pipeline's

    def occupancy(self) -> float:
        spans = self.spans[self.counting_from :]
        if not spans:
            return 0.0
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        return sum(e - s for s, e in spans) / ((last - first) * self.size)

    async def close(self) -> None:
        pass


def paced_run(
    tmp_path: Path,
    store,
    candidates: int,
    analyzer: Analyzer | None = None,
    proposer: SlowLLM | None = None,
    **parallelism: int | None,
) -> tuple[list[Node], TimedPool]:
    task_dir = write_task(
        tmp_path / "paced",
        yaml_text=TASK,
        program=PROGRAM,
        evaluator="def evaluate(path, stage):\n    raise AssertionError('the scripted pool evaluates')\n",
    )
    spec = RunSpec(
        task=str(task_dir),
        name="run",
        parallelism={"evaluators": SLOTS, "proposers": 64, **parallelism},
        llm={"maxConcurrency": 64},
        budget={"maxCandidates": candidates},
    )
    pool = TimedPool(SLOTS)
    evolution = Evolution(
        spec,
        load_task(task_dir),
        store,
        proposer or SlowLLM(),
        tmp_path / "work",
        analyzer=analyzer,
        pool=pool,  # type: ignore[arg-type]
    )
    record = asyncio.run(evolution.run())
    assert record.phase == "Succeeded", record.message
    return store.list_nodes("run"), pool


def test_later_proposals_build_on_fresh_parents_while_evaluators_stay_busy(tmp_path, store):
    candidates = 1 + 6 * SLOTS
    nodes, pool = paced_run(tmp_path, store, candidates)
    assert len(nodes) == candidates
    assert all(n.stage is Stage.EVALUATED for n in nodes)
    initial = nodes[0]
    children = Counter(n.parent_ids[0] for n in nodes[1:])
    # the first wave fills the slots (SLOTS + buffer); the next proposals wait for results, give or take
    # the slots whose evaluations end within a proposal time of the first result
    first_wave = SLOTS + 1 + SLOTS // 8
    assert children[initial.id] <= first_wave + SLOTS // 2, children[initial.id]
    later = nodes[1 + 2 * first_wave :]
    assert later and all(n.parent_ids[0] != initial.id for n in later)
    # greedy selection from a fresh store: the parents of the last candidates are themselves late ones
    seq_of = {n.id: n.seq for n in nodes}
    assert min(seq_of[n.parent_ids[0]] for n in nodes[-SLOTS:]) > first_wave
    best_of_first_wave = max(n.score for n in nodes[1 : 1 + first_wave] if n.score is not None)
    assert max(n.score for n in nodes if n.score is not None) > 2 * best_of_first_wave
    assert pool.occupancy() >= 0.85, pool.occupancy()


def test_an_llm_slower_than_the_evaluations_keeps_the_slots_busy_with_the_fewest_stale_parents(
    tmp_path, store
):
    """LLM twice as slow as an evaluation: the first wave is out for two evaluation times, so each slot needs a
    second candidate proposed meanwhile. The dispatcher once slept through that (the age of the proposals
    under way, which it wakes on, was recorded only once a proposal task ran), and the slots idled a whole
    evaluation after the first results (occupancy 0.80 in the benchmark). Children of the initial program: the
    fewest a busy run can have (`initial_children`), give or take the evaluation times' spread (±25%)."""
    candidates = 1 + 6 * SLOTS
    nodes, pool = paced_run(tmp_path, store, candidates, proposer=SlowLLM(seconds=2 * EVAL_SECONDS))
    children = Counter(n.parent_ids[0] for n in nodes[1:])
    bound = initial_children(SLOTS, 2 * EVAL_SECONDS, EVAL_SECONDS, candidates - 1)
    assert bound == 3 * SLOTS
    assert children[nodes[0].id] <= bound + SLOTS // 2, children[nodes[0].id]
    assert all(n.parent_ids[0] != nodes[0].id for n in nodes[-SLOTS:])
    assert pool.occupancy() >= 0.85, pool.occupancy()


def test_control_a_fixed_deep_queue_proposes_from_the_initial_program(tmp_path, store):
    """Without the pacer (proposalsAhead fixed as deep as the budget), the first wave reserves the whole
    budget: the stale parents the test above rules out."""
    candidates = 1 + 4 * SLOTS
    nodes, _ = paced_run(tmp_path, store, candidates, proposalsAhead=candidates)
    initial = nodes[0]
    children = Counter(n.parent_ids[0] for n in nodes[1:])
    assert children[initial.id] == candidates - 1


class SlowAnalyzer:
    """An Analyzer (an LLM's) that takes longer than the whole run's evaluations."""

    name = "slow"

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.finished: list[float] = []

    async def analyze(self, request: AnalysisRequest) -> Analysis:
        await asyncio.sleep(self.seconds)
        self.finished.append(time.monotonic())
        return Analysis(fields={"effect": f"candidate {request.node.seq} analysed"}, analyzer=self.name)


def test_a_slow_analyzer_never_delays_a_proposal_or_an_evaluation(tmp_path, store):
    candidates = 1 + 4 * SLOTS  # about 4 x EVAL_SECONDS of evaluation
    analyzer = SlowAnalyzer(seconds=8 * EVAL_SECONDS)
    nodes, pool = paced_run(tmp_path, store, candidates, analyzer=analyzer)
    spans = pool.spans[1:]  # the initial program's evaluation waits for nothing either
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    # every candidate was evaluated before the first analysis after the initial program's came back
    assert last < sorted(analyzer.finished)[1]
    assert last - first < 2 * 4 * EVAL_SECONDS
    assert pool.occupancy() >= 0.8
    # and every experiment was analysed before the run ended
    insights = {i.id for i in store.list_insights("run")}
    assert all(n.insight_id in insights for n in store.list_nodes("run"))


class FailingLLM(SlowLLM):
    """Every other request fails at the endpoint, fast; counts the proposals under way at once."""

    def __init__(self, *, fail: bool = True) -> None:
        super().__init__()
        self.fail = fail
        self.calls = itertools.count()
        self.under_way = 0
        self.most_under_way = 0

    async def propose(self, request: ProposalRequest) -> Proposal:
        self.under_way += 1
        self.most_under_way = max(self.most_under_way, self.under_way)
        try:
            if self.fail and next(self.calls) % 2:
                await asyncio.sleep(0.01)
                raise ProposalError("connection refused", kind=FailureKind.LLM_ERROR)
            return await super().propose(request)
        finally:
            self.under_way -= 1


def test_a_failing_endpoint_is_not_pressed_harder(tmp_path, store):
    """Proposals the endpoint failed do not count as proposals that missed a slot: the pacer does not
    propose more to make up for them (it did, up to five times the need, and the errors multiplied)."""
    llm = FailingLLM()
    nodes, _ = paced_run(tmp_path, store, 1 + 4 * SLOTS, proposer=llm)
    failed = [n for n in nodes if n.failure is FailureKind.LLM_ERROR]
    assert len(failed) >= 2 * SLOTS
    assert llm.most_under_way <= SLOTS + buffer_for(SLOTS)


def test_by_default_the_pacer_not_a_cap_of_two_decides_how_many_proposals_run_at_once(tmp_path, store):
    """`parallelism.proposers` unset: the first wave fills every slot at once (it was two at a time)."""
    llm = FailingLLM(fail=False)
    paced_run(tmp_path, store, 1 + 2 * SLOTS, proposer=llm, proposers=None)  # type: ignore[arg-type]
    assert llm.most_under_way == SLOTS
