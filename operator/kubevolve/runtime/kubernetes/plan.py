"""The decision of one reconcile, as a pure function of what the store and the run's Jobs say.

No memory of earlier passes is needed, which is what makes the operator level-triggered:
- A finished Job is deleted only once everything it leads to exists: its result in the store, the analysis
  Job of an evaluated candidate, the debug-retry proposal of a failed one. Until then it stays, so a restart
  finds it and creates the follow-up (the create is idempotent: deterministic names).
- A failed Job is retried as a new, named attempt after an exponential backoff measured from the failure's
  time on the Job itself. A candidate whose evaluation Jobs used up their attempts is recorded as failed in
  the store; a proposal or analysis that used them up keeps its failed Jobs, which count towards
  `failurePolicy.maxFailedJobs`.
- Pipelining: evaluation Jobs keep `parallelism.evaluators` slots busy; proposals are made ahead by at most
  `parallelism.proposers` Jobs at a time (default `llm.maxConcurrency`), never beyond `budget.maxCandidates`:
  as many as the local runtime's pacer wants (loop/pacing.py, Little's law), or a fixed
  `parallelism.proposalsAhead` beyond the free slots when the spec sets one. The pacer is rebuilt at every
  pass from what the pass reads anyway: the proposal and evaluation times the run's last nodes record (the
  steps measure them; a pod's start-up is not in them), and the start times of the running Jobs (from the
  watch stream). The pass asks to be run again when the next proposal falls due.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from kubevolve.core.kinds import Role
from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import FailurePolicySpec, RunSpec
from kubevolve.loop.budget import BudgetVerdict, StopCause, check_budget, wants_debug_retry
from kubevolve.loop.pacing import RESULTS, Pacer
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef
from kubevolve.runtime.kubernetes.names import key_of_node, make_key, node_id, parse_key, retry_key
from kubevolve.runtime.kubernetes.observe import FAILED, SUCCEEDED, WAITING, JobInfo
from kubevolve.runtime.kubernetes.resources import TaskFacts
from kubevolve.runtime.kubernetes.snapshot import Snapshot, needs_analysis

SEED_KEY = make_key(0)
PACE_SECONDS = 1.0  # the shortest wait for a pass the pacer asks for: a Job's start-up takes longer
# the reason of the Succeeded / Failed condition, by the budget limit that stopped the run (None: a runtime's own)
CONDITION_REASONS: dict[StopCause | None, str] = {
    StopCause.CANDIDATES: "MaxCandidatesReached",
    StopCause.TARGET: "TargetReached",
    StopCause.DEADLINE: "DeadlineReached",
    StopCause.FAILURES: "TooManyFailures",
    StopCause.LLM_COST: "MaxLlmCostReached",
}


@dataclass
class PlanInput:
    run: RunRef
    spec: RunSpec
    facts: TaskFacts
    jobs: list[JobInfo]
    snap: Snapshot
    next_index: int
    now: float


@dataclass
class Plan:
    create: list[JobRequest] = field(default_factory=list)
    delete: list[JobInfo] = field(default_factory=list)
    record_failed: list[tuple[str, str, Stage]] = field(default_factory=list)  # node id, error, stage
    next_index: int = 0
    phase: str = "Running"
    reason: str = "Running"  # the reason of the Succeeded / Failed condition
    message: str = ""
    requeue: float | None = None  # seconds until a timed action (a backoff, the deadline)
    running: dict[Role, int] = field(default_factory=lambda: dict.fromkeys(Role, 0))
    waiting: int = 0  # Jobs suspended until Kueue admits them
    failed_jobs: int = 0  # Jobs that used up their attempts

    def wake_in(self, seconds: float) -> None:
        seconds = max(seconds, 0.05)
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)


def wants_retry(spec: RunSpec, node: Node | None) -> bool:
    """The debug-retry rule, for the proposer the step pods make: the LLM Researcher when one is configured."""
    return node is not None and wants_debug_retry(
        node, spec.engineer, proposer_reads_feedback=spec.llm.configured
    )


def backoff(policy: FailurePolicySpec, failures: int) -> float:
    return min(policy.max_backoff_seconds, policy.backoff_seconds * 2 ** max(failures - 1, 0))


def previous_node(run: str, key: str) -> str | None:
    """The failed node a debug-retry key repairs (`00007d2` repairs `00007d1`), None for a fresh proposal."""
    index, retry = parse_key(key)
    return None if retry == 0 else node_id(run, make_key(index, retry - 1))


def _verdict(
    inp: PlanInput, failed_jobs: int, seed_lost: bool, policy: FailurePolicySpec
) -> tuple[BudgetVerdict, str] | None:
    spec, snap, facts = inp.spec, inp.snap, inp.facts
    if seed_lost:
        return BudgetVerdict(
            "the proposal Job of the initial program failed", failed=True
        ), "InitialProgramFailed"
    seed = snap.nodes.get(node_id(inp.run.name, SEED_KEY))
    if seed is not None and seed.stage.is_final and seed.stage is not Stage.EVALUATED:  # as locally: no retry
        return BudgetVerdict(f"the initial program failed: {seed.error}", failed=True), "InitialProgramFailed"
    if policy.max_failed_jobs is not None and failed_jobs >= policy.max_failed_jobs:
        message = f"{failed_jobs} Jobs failed {policy.max_attempts} times each (maxFailedJobs {policy.max_failed_jobs})"
        return BudgetVerdict(message, failed=True), "TooManyFailedJobs"
    target = spec.budget.target_score
    verdict = check_budget(
        spec.budget,
        candidates=snap.finished,
        started_at=snap.record.created_at,
        best_score=snap.best.score if snap.best else None,
        target_score=None if target is None else facts.to_score(target),
        consecutive_failures=snap.consecutive_failures,
        llm_cost=snap.llm_cost,
        now=inp.now,
    )
    if verdict is None:
        return None
    return verdict, CONDITION_REASONS.get(verdict.cause, "BudgetReached")


class _Planner:
    def __init__(self, inp: PlanInput):
        self.inp, self.spec, self.snap, self.run = inp, inp.spec, inp.snap, inp.run.name
        self.policy = inp.spec.failure_policy or FailurePolicySpec()
        self.plan = Plan()
        self.groups: dict[tuple[Role, str], list[JobInfo]] = defaultdict(list)
        for job in inp.jobs:
            self.groups[(job.role, job.key)].append(job)
        for jobs in self.groups.values():
            jobs.sort(key=lambda j: j.attempt)
        self.suspended = inp.spec.suspend
        self.stopped = False
        self.inflight_proposals = 0
        self.holding = False  # proposals held for the first result (Pacer.hold)
        # keys with a running (or just created) evaluation whose result is not stored yet
        self.evaluating = {
            k
            for (r, k), jobs in self.groups.items()
            if r == Role.EVALUATE and not jobs[-1].done and not self._final(k)
        }
        self.exhausted = {
            rk
            for rk, jobs in self.groups.items()
            if jobs[-1].state == FAILED and jobs[-1].attempt + 1 >= self.policy.max_attempts
        }
        self.plan.failed_jobs = len(self.exhausted)

    # ---- helpers ---------------------------------------------------------------------------------
    def node(self, key: str) -> Node | None:
        return self.snap.nodes.get(node_id(self.run, key))

    def _final(self, key: str) -> bool:
        node = self.node(key)
        return node is not None and node.stage.is_final

    def create(self, role: Role, key: str, attempt: int = 0) -> None:
        retry_of = previous_node(self.run, key) if role == Role.PROPOSE else None
        queued_at = self.inp.now if role == Role.PROPOSE else None
        self.plan.create.append(JobRequest(role, key, attempt, retry_of, queued_at))
        self.plan.running[role] += 1
        if role == Role.EVALUATE:
            self.evaluating.add(key)

    def may_create(self) -> bool:
        return not (self.suspended or self.stopped)

    def retry_failed(self, role: Role, key: str, jobs: list[JobInfo], *, slot_free: bool = True) -> bool:
        """Schedule the next attempt of a failed group. False when its attempts are used up."""
        failures = jobs[-1].attempt + 1
        if (role, key) in self.exhausted or failures >= self.policy.max_attempts:
            return False
        due = (jobs[-1].finished_at or self.inp.now) + backoff(self.policy, failures)
        if due > self.inp.now:
            self.plan.wake_in(due - self.inp.now)
        elif self.may_create() and slot_free:
            self.create(role, key, failures)
        return True

    def follow_ups(self, key: str, node: Node, *, analysis: bool) -> bool:
        """Create what a finished candidate leads to; False when that has to wait (the run is suspended)."""
        needed: list[tuple[Role, str]] = []
        if analysis and needs_analysis(node, self.spec) and (Role.ANALYZE, key) not in self.groups:
            needed.append((Role.ANALYZE, key))
        rkey = retry_key(key)
        if (
            not self.stopped
            and wants_retry(self.spec, node)
            and (Role.PROPOSE, rkey) not in self.groups
            and self.node(rkey) is None
        ):
            needed.append((Role.PROPOSE, rkey))
        if needed and self.suspended:
            return False
        for role, k in needed:
            self.create(role, k)
            if role == Role.PROPOSE:
                self.inflight_proposals += 1
        return True

    # ---- the passes ------------------------------------------------------------------------------
    def settle(self) -> None:
        """Settle every group of Jobs. The store is the authority: a candidate whose result is stored is
        done, even if its Job has not been reported finished yet (the step writes, then exits)."""
        settle = {
            Role.PROPOSE: self._settle_propose,
            Role.EVALUATE: self._settle_evaluate,
            Role.ANALYZE: self._settle_analyze,
        }
        for (role, key), jobs in sorted(self.groups.items()):
            running = settle[role](key, jobs, any(not j.done for j in jobs))
            if running:
                self.plan.running[role] += 1
                self.plan.waiting += sum(1 for j in jobs if j.state == WAITING and j.queued)

    def _settle_propose(self, key: str, jobs: list[JobInfo], running: bool) -> bool:
        node = self.node(key)
        if node is not None:
            if self.follow_ups(key, node, analysis=False):
                self.plan.delete += jobs
            return False
        if running or self.retry_failed(Role.PROPOSE, key, jobs):
            self.inflight_proposals += 1
        return running

    def _settle_evaluate(self, key: str, jobs: list[JobInfo], running: bool) -> bool:
        node = self.node(key)
        if node is None:
            self.plan.delete += jobs  # the candidate is gone from the store: nothing to do
        elif node.stage.is_final:
            if self.follow_ups(key, node, analysis=True) and (Role.EVALUATE, key) not in self.exhausted:
                self.plan.delete += jobs
        elif running:
            return True
        elif not self.retry_failed(Role.EVALUATE, key, jobs, slot_free=self.free_slots() > 0):
            attempts = jobs[-1].attempt + 1
            reason = jobs[-1].reason if jobs[-1].state == FAILED else "finished without storing a result"
            stage = Stage.FAILED_QUICK if "quick" in self.stages() else Stage.FAILED_FULL
            self.plan.record_failed.append(
                (node.id, f"evaluation Job failed {attempts} times (last: {reason})", stage)
            )
        return False

    def _settle_analyze(self, key: str, jobs: list[JobInfo], running: bool) -> bool:
        if not needs_analysis(self.node(key), self.spec):
            self.plan.delete += jobs
            return False
        if not running and jobs[-1].state != SUCCEEDED:
            self.retry_failed(Role.ANALYZE, key, jobs)
        return running

    def stages(self) -> Sequence[str]:
        return self.spec.stages or ["quick", "full"]

    def free_slots(self) -> int:
        return self.spec.parallelism.evaluators - len(self.evaluating)

    def evaluate_proposed(self) -> None:
        for node in self.snap.proposed:
            key = key_of_node(self.run, node.id)
            if key is None or (Role.EVALUATE, key) in self.groups or key in self.evaluating:
                continue
            if self.free_slots() <= 0 or not self.may_create():
                return
            self.create(Role.EVALUATE, key)

    def propose(self) -> None:
        if not self.may_create():
            return
        if self.snap.total == 0 and (Role.PROPOSE, SEED_KEY) not in self.groups:
            if self.inflight_proposals == 0:
                self.create(Role.PROPOSE, SEED_KEY)
                self.plan.next_index = max(self.plan.next_index, 1)
            return
        if self.snap.best is None:
            return  # nothing evaluated yet to build on: the seed goes first
        par = self.spec.parallelism
        queued = sum(
            1 for n in self.snap.proposed if (key_of_node(self.run, n.id) or "") not in self.evaluating
        )
        due: float | None = None
        if par.proposals_ahead is None:
            wanted, due = self.paced(queued)
        else:
            wanted = self.free_slots() + par.proposals_ahead - queued - self.inflight_proposals
        room = self.spec.proposers_at_once - self.inflight_proposals
        limit = self.spec.budget.max_candidates
        if limit is not None:
            room = min(room, limit - self.snap.total - self.inflight_proposals)
        if due is not None and room > max(wanted, 0):
            # a pass when the next proposal falls due, unless the proposers or the budget are what hold it
            # back (a proposal Job's end, which is an event, starts that pass); no finer than PACE_SECONDS
            self.plan.wake_in(due if self.holding else max(due, PACE_SECONDS))
        room = min(room, wanted)
        for _ in range(max(room, 0)):
            self.create(Role.PROPOSE, make_key(self.plan.next_index))
            self.plan.next_index += 1
            self.inflight_proposals += 1

    def started(self, role: Role, keys: set[str] | None = None) -> list[float]:
        """Start times of the running Jobs of `role` (of `keys` only, if given); now for one created this
        pass, or seen without a time."""
        now = self.inp.now
        found = [
            jobs[-1].started_at or now
            for (r, k), jobs in self.groups.items()
            if r == role and not jobs[-1].done and (keys is None or k in keys)
        ]
        created = [req for req in self.plan.create if req.role == role and (keys is None or req.key in keys)]
        return found + [now] * len(created)

    def paced(self, queued: int) -> tuple[int, float | None]:
        """Proposals to start now by the pacer, rebuilt from the run's last nodes (Snapshot.recent): the slots
        free now, the evaluations running (since their Jobs started), the proposals under way (the oldest's
        age stands for the proposal time until one is measured) and the `queued` candidates waiting for a
        slot; and the seconds until more may fall due (None: not as things stand). Proposals due as the
        first result is stored are held for it (Pacer.hold)."""
        pacer, now = Pacer(self.spec.parallelism.evaluators), self.inp.now
        for node in self.snap.recent:
            pacer.replay(node)
        busy = self.started(Role.EVALUATE, self.evaluating)
        proposing = self.started(Role.PROPOSE)
        oldest = min(proposing, default=None)
        first = sum(self.snap.counts.get(stage, 0) for stage in RESULTS) <= 1
        wanted = pacer.wanted(self.free_slots(), busy, now, oldest, first=first)
        starts = pacer.starts(wanted, self.inflight_proposals, queued)
        if starts > 0 and first and (hold := pacer.hold(busy, now)) > 0:
            self.holding = True
            return 0, hold
        due = pacer.next_need(busy, now, oldest)
        if due is not None and _ends_within(pacer, busy, proposing, now, due):
            due = None  # a Job's end comes first, and its event brings a pass that looks again
        return starts, due

    def stop_running(self) -> None:
        """The run is over: the proposals and evaluations still running (with no result yet) are not needed."""
        for (role, key), jobs in self.groups.items():
            unfinished = (role == Role.PROPOSE and self.node(key) is None) or (
                role == Role.EVALUATE and not self._final(key)
            )
            running = [j for j in jobs if not j.done and j not in self.plan.delete]
            if unfinished and running:
                self.plan.delete += running
                self.plan.running[role] -= 1

    def first_index(self) -> int:
        indices = [parse_key(k)[0] for (_r, k) in self.groups] + [
            self.snap.max_index,
            self.inp.next_index - 1,
        ]
        return max(indices) + 1


def _ends_within(
    pacer: Pacer, evaluating: list[float], proposing: list[float], now: float, due: float
) -> bool:
    """A running evaluation or proposal Job (started at the times given) should end within `due` seconds."""
    ends = [(evaluating, pacer.evaluation.mean), (proposing, pacer.proposal.mean)]
    return any(
        now < start + mean <= now + due for starts, mean in ends if mean is not None for start in starts
    )


def make_plan(inp: PlanInput) -> Plan:
    p = _Planner(inp)
    p.plan.next_index = p.first_index()
    seed_lost = inp.snap.total == 0 and (Role.PROPOSE, SEED_KEY) in p.exhausted
    found = _verdict(inp, p.plan.failed_jobs, seed_lost, p.policy)
    p.stopped = found is not None
    p.settle()
    if found is not None:
        verdict, reason = found
        p.stop_running()
        p.plan.phase = "Failed" if verdict.failed else "Succeeded"
        p.plan.reason, p.plan.message = reason, verdict.reason
    else:
        p.evaluate_proposed()
        p.propose()
        p.plan.phase = "Suspended" if p.suspended else "Running"
        if inp.spec.budget.deadline_seconds is not None:
            p.plan.wake_in(inp.snap.record.created_at + inp.spec.budget.deadline_seconds - inp.now)
    return p.plan
