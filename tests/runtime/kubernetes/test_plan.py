"""The reconcile decision as a pure function: store state + the run's Jobs -> what to create and delete."""

from __future__ import annotations

import pytest

from kubevolve.core.models import Node, RunRecord, Stage
from kubevolve.core.spec import parse_run_spec
from kubevolve.loop.pacing import buffer_for
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef
from kubevolve.runtime.kubernetes.names import job_name, node_id
from kubevolve.runtime.kubernetes.observe import ACTIVE, FAILED, SUCCEEDED, JobInfo
from kubevolve.runtime.kubernetes.plan import PACE_SECONDS, PlanInput, make_plan
from kubevolve.runtime.kubernetes.resources import TaskFacts
from kubevolve.runtime.kubernetes.snapshot import Snapshot

RUN = "r"
NOW = 1000.0


def node(key: str, stage: Stage = Stage.EVALUATED, score: float | None = None, seq: int = 0, **kw) -> Node:
    if stage is Stage.EVALUATED and score is None:
        score = float(seq)
    return Node(run_id=RUN, code="x", id=node_id(RUN, key), stage=stage, score=score, seq=seq, **kw)


def job(
    role: str,
    key: str,
    state: str = ACTIVE,
    attempt: int = 0,
    finished_at: float | None = None,
    started_at: float | None = None,
) -> JobInfo:
    return JobInfo(
        job_name(RUN, role, key, attempt),
        role,
        key,
        attempt,
        node_id(RUN, key),
        state,
        finished_at=finished_at,
        started_at=started_at,
        reason="OOMKilled" if state == FAILED else "",
    )


def plan_for(nodes=(), jobs=(), next_index=0, now=NOW, **spec):
    spec = parse_run_spec({"task": "tasks/x", **spec})
    counts: dict[Stage, int] = {}
    for n in nodes:
        counts[n.stage] = counts.get(n.stage, 0) + 1
    evaluated = [n for n in nodes if n.stage is Stage.EVALUATED]
    snap = Snapshot(
        record=RunRecord(id=RUN, task="x", spec={}, created_at=0.0),
        counts=counts,
        proposed=[n for n in nodes if n.stage is Stage.PROPOSED],
        nodes={n.id: n for n in nodes},
        best=max(evaluated, key=lambda n: n.score) if evaluated else None,
        recent=sorted(nodes, key=lambda n: n.seq),
    )
    facts = TaskFacts(name="x", metric="f")
    return make_plan(PlanInput(RunRef(RUN, "ns", "uid"), spec, facts, list(jobs), snap, next_index, now))


def created(plan) -> list[tuple[str, str, int]]:
    return [(r.role, r.key, r.attempt) for r in plan.create]


def test_a_new_run_proposes_the_initial_program_first():
    plan = plan_for()
    assert created(plan) == [("propose", "00000", 0)] and plan.next_index == 1 and plan.phase == "Running"
    # the seed is stored but not evaluated: it is evaluated, and nothing else is proposed yet
    plan = plan_for([node("00000", Stage.PROPOSED)], [job("propose", "00000", SUCCEEDED)], next_index=1)
    assert created(plan) == [("evaluate", "00000", 0)]
    assert [j.name for j in plan.delete] == ["r-propose-00000"]


def test_proposals_are_made_ahead_so_evaluation_slots_stay_full():
    seed = node("00000")
    plan = plan_for([seed], next_index=1, parallelism={"evaluators": 2, "proposers": 3, "proposalsAhead": 2})
    assert created(plan) == [("propose", "00001", 0), ("propose", "00002", 0), ("propose", "00003", 0)]
    # two evaluations running: up to proposalsAhead (here two) more are kept ready
    busy = [node("00001", Stage.PROPOSED, seq=1), node("00002", Stage.PROPOSED, seq=2)]
    jobs = [job("evaluate", "00001"), job("evaluate", "00002")]
    plan = plan_for(
        [seed, *busy], jobs, next_index=3, parallelism={"evaluators": 2, "proposers": 3, "proposalsAhead": 2}
    )
    assert created(plan) == [("propose", "00003", 0), ("propose", "00004", 0)]
    assert plan.running["evaluate"] == 2 and plan.running["propose"] == 2
    # a proposal that is ready waits for a slot; when a slot frees, it is evaluated at once
    ready = node("00003", Stage.PROPOSED, seq=3)
    plan = plan_for(
        [seed, *busy, ready],
        jobs,
        next_index=4,
        parallelism={"evaluators": 2, "proposers": 3, "proposalsAhead": 2},
    )
    assert ("evaluate", "00003", 0) not in created(plan)
    plan = plan_for(
        [seed, busy[0], node("00002", seq=2), ready],
        [jobs[0], job("evaluate", "00002", SUCCEEDED)],
        next_index=4,
        parallelism={"evaluators": 2, "proposers": 3, "proposalsAhead": 2},
    )
    assert ("evaluate", "00003", 0) in created(plan) and ("analyze", "00002", 0) in created(plan)
    assert "r-eval-00002" in [j.name for j in plan.delete]


def test_max_candidates_counts_what_is_in_flight():
    plan = plan_for(
        [node("00000"), node("00001", Stage.PROPOSED, seq=1)],
        [job("propose", "00002")],
        next_index=3,
        budget={"maxCandidates": 3},
    )
    assert [r for r in created(plan) if r[0] == "propose"] == []
    done = [node(f"0000{i}", seq=i) for i in range(3)]
    plan = plan_for(done, next_index=3, budget={"maxCandidates": 3})
    assert plan.phase == "Succeeded" and plan.reason == "MaxCandidatesReached" and not plan.create


def test_failed_job_is_retried_after_backoff_then_recorded_failed():
    nodes = [node("00000"), node("00001", Stage.PROPOSED, seq=1)]
    policy = {"maxAttempts": 2, "backoffSeconds": 10}
    failed0 = job("evaluate", "00001", FAILED, 0, finished_at=NOW - 4)
    plan = plan_for(nodes, [failed0], next_index=2, failurePolicy=policy)
    assert ("evaluate", "00001", 1) not in created(plan) and 5.9 < plan.requeue < 6.1
    plan = plan_for(nodes, [failed0], next_index=2, now=NOW + 7, failurePolicy=policy)
    assert ("evaluate", "00001", 1) in created(plan)
    failed1 = job("evaluate", "00001", FAILED, 1, finished_at=NOW + 20)
    plan = plan_for(nodes, [failed0, failed1], next_index=2, now=NOW + 60, failurePolicy=policy)
    ((nid, error, stage),) = plan.record_failed
    assert (
        nid == "r-c00001"
        and stage is Stage.FAILED_QUICK
        and "failed 2 times" in error
        and "OOMKilled" in error
    )
    assert not plan.delete and plan.failed_jobs == 1  # kept, and counted towards maxFailedJobs
    # once recorded, the candidate is analysed like any failed one; its failed Jobs stay
    nodes[1] = node("00001", Stage.FAILED_QUICK, seq=1)
    plan = plan_for(nodes, [failed0, failed1], next_index=2, now=NOW + 61, failurePolicy=policy)
    assert ("analyze", "00001", 0) in created(plan) and not plan.delete


def test_too_many_exhausted_jobs_fail_the_run():
    jobs = [job("propose", f"0000{i}", FAILED, 0, finished_at=0) for i in range(1, 4)]
    plan = plan_for([node("00000")], jobs, next_index=4, failurePolicy={"maxAttempts": 1, "maxFailedJobs": 3})
    assert plan.phase == "Failed" and plan.reason == "TooManyFailedJobs" and not plan.create


def test_suspend_creates_nothing_and_keeps_jobs_whose_follow_ups_wait():
    nodes = [node("00000"), node("00001", seq=1)]
    plan = plan_for(nodes, [job("evaluate", "00001", SUCCEEDED)], next_index=2, suspend=True)
    assert plan.phase == "Suspended" and not plan.create and not plan.delete
    plan = plan_for(nodes, [job("evaluate", "00001", SUCCEEDED)], next_index=2)
    assert ("analyze", "00001", 0) in created(plan) and [j.name for j in plan.delete] == ["r-eval-00001"]


def test_target_reached_stops_work_still_in_progress():
    nodes = [node("00000", score=1.0), node("00001", Stage.PROPOSED, seq=1)]
    jobs = [job("evaluate", "00001"), job("propose", "00002")]
    plan = plan_for(nodes, jobs, next_index=3, budget={"targetScore": 0.5})
    assert plan.phase == "Succeeded" and plan.reason == "TargetReached"
    assert {j.name for j in plan.delete} == {"r-eval-00001", "r-propose-00002"} and not plan.create


def test_the_store_is_the_authority_over_a_late_job_status():
    nodes = [node("00000"), node("00001", seq=1)]
    plan = plan_for(nodes, [job("evaluate", "00001", ACTIVE)], next_index=2, budget={"maxCandidates": 2})
    assert plan.phase == "Succeeded"
    assert ("analyze", "00001", 0) in created(plan) and [j.name for j in plan.delete] == ["r-eval-00001"]


def test_initial_program_failing_fails_the_run():
    plan = plan_for([node("00000", Stage.FAILED_QUICK, error="SyntaxError")])
    assert plan.phase == "Failed" and plan.reason == "InitialProgramFailed" and "SyntaxError" in plan.message


def test_debug_retry_of_a_failed_candidate_with_an_llm():
    nodes = [node("00000"), node("00001", Stage.FAILED_QUICK, seq=1, error="boom")]
    llm = {"endpoint": "http://llm:8000/v1"}
    plan = plan_for(nodes, [job("evaluate", "00001", SUCCEEDED)], next_index=2, llm=llm)
    assert JobRequest("propose", "00001d1", 0, "r-c00001") in plan.create
    assert ("analyze", "00001", 0) in created(plan)
    nodes.append(node("00001d1", Stage.FAILED_QUICK, seq=2, attempt=1))  # debugRetries 1: no second retry
    plan = plan_for(nodes, [job("evaluate", "00001d1", SUCCEEDED)], next_index=2, llm=llm)
    assert not [r for r in plan.create if r.key == "00001d2"]
    plan = plan_for(nodes[:2], [job("evaluate", "00001", SUCCEEDED)], next_index=2)  # offline: no retry
    assert not [r for r in plan.create if r.retry_of]


def test_next_index_survives_a_lost_status():
    jobs = [job("propose", "00007")]
    plan = plan_for([node("00000")], jobs, next_index=0, parallelism={"proposers": 3, "proposalsAhead": 2})
    assert [r.key for r in plan.create] == ["00008", "00009"]


def test_snapshot_reads_the_named_nodes_before_the_counts(tmp_path):
    """Steps write while the operator reads: a node it finds must also be in the counts it reads next."""
    from kubevolve.runtime.kubernetes.snapshot import take_snapshot
    from kubevolve.store.sqlite import SQLiteStore

    calls = []

    class Recording(SQLiteStore):
        def get_node(self, node_id):
            calls.append("get_node")
            return super().get_node(node_id)

        def count_nodes(self, run_id):
            calls.append("count_nodes")
            return super().count_nodes(run_id)

    store = Recording(tmp_path / "s.db")
    spec = parse_run_spec({"task": "tasks/x"})
    take_snapshot(store, RUN, spec, TaskFacts(name="x"), [node_id(RUN, "00001"), node_id(RUN, "00002")])
    assert calls == ["get_node", "get_node", "count_nodes"]


# ---- the pacer (parallelism.proposalsAhead unset) -------------------------------------------------------------
PACED = {"parallelism": {"evaluators": 16}, "llm": {"maxConcurrency": 64}}


def timed(
    key: str, seq: int, stage: Stage = Stage.EVALUATED, latency: float = 1.0, evaluation: float = 4.0
) -> Node:
    """A node whose step recorded its proposal time and, once evaluated, its evaluation time."""
    timings = {"propose": latency} | ({"quick": evaluation} if stage is not Stage.PROPOSED else {})
    return node(key, stage, seq=seq, timings=timings)


def proposals(plan) -> list[str]:
    return [key for role, key, _ in created(plan) if role == "propose"]


def wave(first: int, count: int) -> list[str]:
    return [f"{index:05d}" for index in range(first, first + count)]


def test_the_pacer_proposes_a_wave_one_proposal_time_before_the_slots_free():
    """The issue's W=16, LLM 1 s, eval 4 s setting on Kubernetes: the first wave fills the slots (no buffer:
    every proposal before the first result is a child of the initial program); while its evaluations run,
    nothing is proposed until one proposal time before they end, and the pass asks to be run then."""
    seed = timed("00000", 0)
    plan = plan_for([seed], next_index=1, **PACED)
    assert proposals(plan) == wave(1, 16)
    # the first wave stored and being evaluated since NOW: the next is due at NOW + 3
    running = [timed(k, i, Stage.PROPOSED) for i, k in enumerate(wave(1, 16), 1)]
    jobs = [job("evaluate", k, started_at=NOW) for k in wave(1, 16)]
    plan = plan_for([seed, *running], jobs, next_index=17, **PACED)
    assert proposals(plan) == [] and plan.requeue == pytest.approx(3.0)
    plan = plan_for([seed, *running], jobs, next_index=17, now=NOW + 3.0, **PACED)
    assert proposals(plan) == wave(17, 16)
    # the proposals under way count: the pass after creates nothing more
    under_way = jobs + [job("propose", k, started_at=NOW + 3.0) for k in wave(17, 16)]
    plan = plan_for([seed, *running], under_way, next_index=33, now=NOW + 3.1, **PACED)
    assert proposals(plan) == []


def test_after_the_first_results_the_buffer_is_kept_and_rejections_are_made_up_for():
    seed = timed("00000", 0)
    done = [timed(k, i) for i, k in enumerate(wave(1, 16), 1)]
    running = [timed(k, i, Stage.PROPOSED) for i, k in enumerate(wave(17, 16), 17)]
    jobs = [job("evaluate", k, started_at=NOW - 3.0) for k in wave(17, 16)]
    plan = plan_for([seed, *done, *running], jobs, next_index=33, **PACED)
    assert proposals(plan) == wave(33, 16 + buffer_for(16))
    # half the recent proposals rejected before evaluation: more proposals make the same candidates
    rejected = [
        timed(k, i, Stage.REJECTED_NOVELTY if i % 2 else Stage.EVALUATED)
        for i, k in enumerate(wave(1, 16), 1)
    ]
    plan = plan_for([seed, *rejected, *running], jobs, next_index=33, **PACED)
    assert len(proposals(plan)) > 16 + buffer_for(16)


def test_proposals_due_as_the_first_result_is_stored_wait_for_it():
    """W=8, LLM 4 s, eval 2 s: as the first wave's evaluations end, the next two waves are being proposed
    and the fourth falls due (its candidates will be taken one proposal time from now). The pass holds it
    and asks to be run again just after those results are due, so that it builds on them."""
    spec = {"parallelism": {"evaluators": 8}, "llm": {"maxConcurrency": 64}}
    seed = timed("00000", 0, latency=4.1, evaluation=2.0)
    evaluating = [timed(k, i, Stage.PROPOSED, latency=4.1) for i, k in enumerate(wave(1, 8), 1)]
    jobs = [job("evaluate", k, started_at=NOW - 1.95) for k in wave(1, 8)]
    jobs += [job("propose", k, started_at=NOW - 2.0) for k in wave(9, 16)]
    plan = plan_for([seed, *evaluating], jobs, next_index=25, **spec)
    assert proposals(plan) == [] and plan.requeue == pytest.approx(0.25)
    # one result stored: no more holding
    evaluating[0] = timed("00001", 1, latency=4.1, evaluation=2.0)
    plan = plan_for([seed, *evaluating], jobs[1:], next_index=25, now=NOW + 0.06, **spec)
    assert proposals(plan) == wave(25, 8 + buffer_for(8))


def test_the_pacer_is_rebuilt_from_the_snapshot_alone():
    """The operator keeps nothing between passes: a restarted operator given the same store and Jobs decides
    the same, and what it decides follows the times the run's nodes recorded."""
    seed = timed("00000", 0)
    running = [timed(k, i, Stage.PROPOSED) for i, k in enumerate(wave(1, 16), 1)]
    jobs = [job("evaluate", k, started_at=NOW) for k in wave(1, 16)]
    first = plan_for([seed, *running], jobs, next_index=17, now=NOW + 2.0, **PACED)
    again = plan_for([seed, *running], jobs, next_index=17, now=NOW + 2.0, **PACED)
    assert created(first) == created(again) == [] and first.requeue == again.requeue == pytest.approx(1.0)
    slow = [timed(k, i, Stage.PROPOSED, latency=2.5) for i, k in enumerate(wave(1, 16), 1)]
    assert proposals(plan_for([seed, *slow], jobs, next_index=17, now=NOW + 2.0, **PACED)) == wave(17, 16)


def test_proposals_at_once_are_capped_by_the_endpoints_concurrency_by_default():
    seed = timed("00000", 0)
    plan = plan_for([seed], next_index=1, parallelism={"evaluators": 16})
    assert len(proposals(plan)) == 8  # llm.maxConcurrency's default
    plan = plan_for([seed], next_index=1, parallelism={"evaluators": 16, "proposers": 3})
    assert len(proposals(plan)) == 3


def test_the_pacer_asks_for_no_pass_it_could_not_use():
    """A pass costs the operator (and kmock) work: the pacer asks for one only when a proposal could start
    then and no Job is expected to end before it, and no sooner than PACE_SECONDS (with ms-long steps it
    asked every 50 ms: 37 passes per candidate in benchmarks/operator_scale.py against 6)."""
    seed = timed("00000", 0)
    running = [timed(k, i, Stage.PROPOSED) for i, k in enumerate(wave(1, 16), 1)]
    jobs = [job("evaluate", k, started_at=NOW) for k in wave(1, 16)]
    assert plan_for([seed, *running], jobs, next_index=17, **PACED).requeue == pytest.approx(3.0)
    # an evaluation that ends before then: its Job's event brings a pass, which looks again
    staggered = jobs[:-1] + [job("evaluate", "00016", started_at=NOW - 3.5)]
    assert plan_for([seed, *running], staggered, next_index=17, **PACED).requeue is None
    # every proposer busy: the end of a proposal Job brings the next pass
    capped = {"parallelism": {"evaluators": 16, "proposers": 2}}
    busy = jobs + [job("propose", k, started_at=NOW) for k in ("00017", "00018")]
    assert plan_for([seed, *running], busy, next_index=19, **capped).requeue is None
    # the budget spent: nothing to propose, nothing to wake for
    assert (
        plan_for([seed, *running], jobs, next_index=17, budget={"maxCandidates": 17}, **PACED).requeue is None
    )
    # instant steps: no pass sooner than PACE_SECONDS
    quick = [
        timed(k, i, Stage.PROPOSED, latency=0.001, evaluation=0.001) for i, k in enumerate(wave(1, 16), 1)
    ]
    plan = plan_for(
        [timed("00000", 0, latency=0.001, evaluation=0.001), *quick],
        jobs,
        next_index=17,
        now=NOW - 0.01,
        **PACED,
    )
    assert plan.requeue is None or plan.requeue >= PACE_SECONDS
