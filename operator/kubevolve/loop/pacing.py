"""How many proposals a pipelined run keeps in flight: enough to keep every evaluator busy, and no more, so
that each proposal selects its parents from the freshest store it can.

Little's law: to hand W slots a candidate every E seconds (the evaluation time) through a proposer that takes
L seconds (the LLM's latency), about W x L / E proposals must be under way. Fewer and the slots wait for the
LLM; more and proposals are made long before a slot needs them, from a store that lacks everything evaluated
meanwhile (with W=16, L=1 s, E=4 s and 64 candidates, a first wave that reserved the whole budget made all 64
children of the initial program).

The pacer applies it slot by slot. It keeps moving averages of the proposal time and the evaluation time (and
of their spread, as TCP does for round trips) and counts, for each slot, the candidates it will take within
one proposal time from now: an idle slot one now, a busy one one when its evaluation should end, and, when
evaluations are shorter than proposals, one more per evaluation time after that. A proposal started now is
then ready about when its slot wants it, having seen every result stored until it started. A few more are
kept (the buffer) for evaluations that end early. Candidates ready and waiting passed every check already;
only the proposals under way are discounted by the share that reaches an evaluator at all (the others are
rejected before evaluation and fill no slot). In a steady state the count is W x L / E plus the buffer; when
evaluations end together, as a first wave's do, the next wave is proposed together, one proposal time
before it is needed.

Until the first proposed candidate's result is stored, every proposal is a child of the initial program, and
with fixed times some must be for the slots to stay busy: they free together at L + E (the first results),
and each candidate they take before L + E + L was proposed before L + E (`initial_children`: W x
ceil((L + E) / E); the first wave alone only with an instant LLM). So meanwhile the pacer keeps no buffer
(it would only add children of the initial program, which wait a whole evaluation for a slot), and proposals
that fall due as that first result is due (within the pacer's margins before, HOLD evaluation times after)
wait for it. The Kubernetes operator uses the same pacer, rebuilt at every pass (`replay`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage

ALPHA = 0.25  # weight of a new sample in a moving average
MIN_YIELD = 0.2  # proposals per slot filled are counted at most 1 / MIN_YIELD times over
SPREAD = 2.0  # deviations of margin on either estimate
MAX_PER_SLOT = 64  # candidates one slot is counted to take within a horizon (instant evaluations: unbounded)
PRE_MEASURE_PER_SLOT = 2  # the same, until a proposal time is measured
HOLD = 0.1  # of an evaluation time: how near its due time proposals wait for the first result
RESULTS = (Stage.EVALUATED, Stage.FAILED_QUICK, Stage.FAILED_FULL)  # a candidate whose evaluation ended
REJECTED = (Stage.REJECTED_STATIC, Stage.REJECTED_NOVELTY)  # a proposal that reached no evaluator


def initial_children(slots: int, latency: float, evaluation: float, candidates: int) -> int:
    """The fewest children of the initial program a run with fixed proposal and evaluation times can have and
    keep every slot busy: the slots take their first candidates at L and free together every E after; a
    candidate a slot takes at L + kE was proposed at kE, from a store without any result before L + E. So the
    first ceil((L + E) / E) candidates of every slot (W x (1 + ceil(L / E))), at most the `candidates` after
    the initial program. With L a whole multiple of E, a proposal is due exactly as the first result is
    stored: the count holds only if that proposal waits for it (the pacer's HOLD), else it is one wave more."""
    if evaluation <= 0:
        return min(candidates, slots)
    return min(candidates, slots * math.ceil((latency + evaluation) / evaluation - 1e-9))


@dataclass
class Estimate:
    """A moving average of a duration and of its absolute deviation; None until the first sample. The
    deviation starts at zero, not at half the first sample as TCP's does: with SPREAD deviations of margin
    that would count every running evaluation as about to end, and propose a second wave from the store the
    first wave saw."""

    mean: float | None = None
    deviation: float = 0.0

    def add(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if self.mean is None:
            self.mean = seconds
            return
        self.deviation += ALPHA * (abs(seconds - self.mean) - self.deviation)
        self.mean += ALPHA * (seconds - self.mean)


def buffer_for(slots: int) -> int:
    """Proposals kept in flight beyond the slots' need: one, and one more per eight slots."""
    return 1 + slots // 8


class Pacer:
    """The in-flight bound of a run with `slots` evaluation slots: `wanted` candidates on the way, `starts`
    proposals to start for them, `hold` for the first result, `next_need` for when to look again."""

    def __init__(self, slots: int, buffer: int | None = None):
        self.slots = slots
        self.buffer = buffer_for(slots) if buffer is None else buffer
        self.proposal = Estimate()
        self.evaluation = Estimate()
        self.yield_ = 1.0  # moving share of proposals that went on to an evaluator

    def replay(self, node: Node) -> None:
        """Learn from a stored node's timings (a resumed run, or the Kubernetes operator, which keeps nothing
        between passes): its proposal time, unless the LLM endpoint failed it, and its evaluation time; on
        Kubernetes its proposal and evaluation Jobs' wall times where recorded (pod start-up included: what
        the operator waits for). A node still PROPOSED (on Kubernetes, waiting for or in its evaluation)
        passed the checks: it fills a slot."""
        proposal = node.timings.get("propose_job", node.timings.get("propose"))
        if proposal is not None and node.failure is not FailureKind.LLM_ERROR:
            self.proposed(proposal, evaluated=node.stage not in REJECTED)
        if "evaluate_job" in node.timings:  # the Kubernetes runtime's evaluation Job, start to end
            self.evaluated(node.timings["evaluate_job"])
            return
        stages = [node.timings[s] for s in ("quick", "full") if s in node.timings]
        if stages:
            self.evaluated(sum(stages))

    def proposed(self, seconds: float, *, evaluated: bool) -> None:
        """A proposal took `seconds`; `evaluated`: it goes on to an evaluator (it was not rejected first)."""
        self.proposal.add(seconds)
        self.yield_ += ALPHA * ((1.0 if evaluated else 0.0) - self.yield_)

    def evaluated(self, seconds: float) -> None:
        self.evaluation.add(seconds)

    def horizon(self, now: float = 0.0, oldest: float | None = None) -> float:
        """How far ahead a slot's need is counted: one proposal time, with margin. Until one is measured, the
        age of the oldest proposal under way (since `oldest`; zero when none is), for proposals take at least
        that long: with an LLM slower than the evaluations a second candidate per slot is then proposed once
        the first wave has taken longer than an evaluation, not one LLM latency later. Each slot counts at most
        PRE_MEASURE_PER_SLOT candidates meanwhile: under load that age grows with every proposal added, and
        unbounded it proposed the whole budget from the initial program."""
        if self.proposal.mean is not None:
            return self.proposal.mean + SPREAD * self.proposal.deviation
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def frees_at(self, started: float, now: float) -> float:
        """When an evaluation that started at `started` should end, early side; an overdue one (or any, while
        nothing is measured) ends now."""
        if self.evaluation.mean is None:
            return now
        return max(now, started + max(0.0, self.evaluation.mean - SPREAD * self.evaluation.deviation))

    def _period(self) -> float | None:
        """A slot's time per candidate, short side: the interval at which it takes the next (None: unknown)."""
        if self.evaluation.mean is None:
            return None
        return max(0.0, self.evaluation.mean - SPREAD * self.evaluation.deviation)

    def _takes(self, free: float, until: float) -> int:
        """Candidates a slot free from `free` on takes until `until`: one then, and one per period after."""
        if free > until:
            return 0
        period = self._period()
        if period is None:
            return 1
        most = MAX_PER_SLOT if self.proposal.mean is not None else PRE_MEASURE_PER_SLOT
        if period <= 0:
            return 1 if until <= free else most
        return min(most, 1 + math.floor((until - free) / period))

    def wanted(
        self,
        idle: int,
        busy_since: list[float],
        now: float,
        oldest: float | None = None,
        *,
        first: bool = False,
    ) -> int:
        """Candidates to have on the way (being proposed, or ready and waiting for a slot) now, given `idle`
        slots waiting for a candidate, the start times of the evaluations running and of the oldest proposal
        under way (None: none is). `first`: no proposed candidate's result is stored yet, so no buffer."""
        until = now + self.horizon(now, oldest)
        needed = idle * self._takes(now, until) + sum(
            self._takes(self.frees_at(started, now), until) for started in busy_since
        )
        return needed + (0 if first else self.buffer)

    def starts(self, wanted: int, proposing: int, ready: int) -> int:
        """Proposals to start now so that the candidates to expect reach `wanted`: every `ready` one (it passed
        the checks) and each of the `proposing` at the share that reaches a slot."""
        share = max(self.yield_, MIN_YIELD)
        short = wanted - ready - share * proposing
        return max(0, math.ceil(short / share - 1e-9))

    def hold(self, busy_since: list[float], now: float) -> float:
        """Seconds to hold new proposals for the result due first (0: none to wait for). Asked while every
        proposal is a child of the initial program, so that proposals due as the first result is stored build
        on it: with L a whole multiple of E they come due just as it does, or a little before, by the margins
        the pacer keeps (SPREAD deviations of either time). So they wait from that margin plus HOLD
        evaluation times before the result's due time until HOLD evaluation times after it; the caller stops
        holding once the result is stored. The slots they fill lose that margin, and idle at most HOLD
        evaluation times more, once in a run."""
        if self.evaluation.mean is None or not busy_since:
            return 0.0
        late = HOLD * self.evaluation.mean
        margin = SPREAD * (self.evaluation.deviation + self.proposal.deviation)
        due = min(busy_since) + self.evaluation.mean - now
        return due + late if -late < due <= late + margin else 0.0

    def next_need(self, busy_since: list[float], now: float, oldest: float | None = None) -> float | None:
        """Seconds from `now` until the count may grow (None: not as things stand): a running evaluation's
        slot comes to take one more candidate within the horizon, or, while the age of the first proposals is
        the horizon and grows with it, a fraction of an evaluation time."""
        horizon, period = self.horizon(now, oldest), self._period()
        most = MAX_PER_SLOT if self.proposal.mean is not None else PRE_MEASURE_PER_SLOT
        later = []
        for started in busy_since:
            free = self.frees_at(started, now)
            taken = self._takes(free, now + horizon)
            if taken == 0:
                later.append(free - horizon - now)
            elif period and taken < most:
                later.append(free + taken * period - horizon - now)
        if oldest is not None and self.proposal.mean is None:
            later.append(min(1.0, max(0.02, (period or 1.0) / 4)))
        later = [t for t in later if t > 0]
        return min(later) if later else None
