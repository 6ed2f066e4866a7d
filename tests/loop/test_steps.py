"""The engine steps that Kubernetes Jobs run: each reads the store, writes the store, and is idempotent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from kubevolve.cli.app import app
from kubevolve.core.models import RunRecord, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import load_task
from kubevolve.loop.agents import Agents, make_agents
from kubevolve.loop.analyze.analyzer import OfflineAnalyzer
from kubevolve.loop.engineer.engineer import OneSlotEngineer
from kubevolve.loop.learn.embeddings import normalise
from kubevolve.loop.research.offline import OfflineProposer
from kubevolve.loop.research.proposal import ProposalRequest
from kubevolve.loop.run_state import RunState
from kubevolve.loop.steps import (
    StepError,
    analyze_step,
    evaluate_step,
    load_context,
    propose,
    propose_step,
)
from kubevolve.runtime.local import Evolution
from tests.kit.toy_task import write_task

AGENTS = make_agents(RunSpec(task="unused"))


def put_run(store, toy_task, name="k8s-run"):
    spec = RunSpec(task=str(toy_task), name=name)
    store.put_run(RunRecord(id=name, task="toy", spec=spec.to_dict()))
    return load_context(store, name)


def test_propose_evaluate_analyze_cycle(store, toy_task, tmp_path):
    ctx = put_run(store, toy_task)
    seed = asyncio.run(propose_step(ctx, AGENTS, node_id="seed-0"))
    assert seed.id == "seed-0" and seed.stage is Stage.PROPOSED and not seed.parent_ids
    assert asyncio.run(propose_step(ctx, AGENTS, node_id="seed-0")).seq == seed.seq  # idempotent

    engineer = OneSlotEngineer(ctx.task, ctx.spec, tmp_path / "work")
    evaluated = asyncio.run(evaluate_step(ctx, "seed-0", engineer))
    assert evaluated.stage is Stage.EVALUATED and evaluated.score == -8.5
    assert store.get_node("seed-0").stage is Stage.EVALUATED
    again = asyncio.run(evaluate_step(ctx, "seed-0", engineer))
    assert again.timings == evaluated.timings  # a final node is not evaluated twice

    insight = asyncio.run(analyze_step(ctx, "seed-0", AGENTS))
    assert "Candidate #0" in insight.text and "f -8.5" in insight.text
    assert store.get_node("seed-0").insight_id == insight.id
    assert asyncio.run(analyze_step(ctx, "seed-0", AGENTS)).id == insight.id

    queued = time.time() - 2.0  # the operator created the proposal's Job two seconds ago
    child = asyncio.run(propose_step(ctx, AGENTS, node_id="cand-1", queued_at=queued))
    assert child.parent_ids == ["seed-0"] and child.stage is Stage.PROPOSED and child.diff
    assert 2.0 <= child.timings["propose_job"] < 60 and "propose_job" not in seed.timings
    child = asyncio.run(evaluate_step(ctx, "cand-1", engineer))
    assert child.stage is Stage.EVALUATED
    text = asyncio.run(analyze_step(ctx, "cand-1", AGENTS)).text
    assert "f -8.5 -> " in text and "offline proposer" in text


def test_step_cli_prints_json_and_names_unknown_runs(store, toy_task, tmp_path):
    put_run(store, toy_task)
    runner = CliRunner()
    args = ["--run", "k8s-run", "--store", str(store.path)]
    out = runner.invoke(app, ["step", "propose", *args, "--node-id", "n0"], catch_exceptions=False)
    assert out.exit_code == 0 and json.loads(out.stdout)["stage"] == "proposed"
    out = runner.invoke(app, ["step", "evaluate", *args, "--node", "n0", "--workspace", str(tmp_path / "w")])
    assert out.exit_code == 0 and json.loads(out.stdout)["stage"] == "evaluated"
    out = runner.invoke(app, ["step", "analyze", *args, "--node", "n0"])
    assert out.exit_code == 0 and "Candidate #0" in json.loads(out.stdout)["text"]
    bad = runner.invoke(app, ["step", "propose", "--run", "nope", "--store", str(store.path)])
    assert bad.exit_code == 2 and "run 'nope' is not in the store" in bad.stderr
    other_tenant = runner.invoke(app, ["step", "propose", *args, "--tenant", "lab-b"])
    assert other_tenant.exit_code == 2 and "tenant 'lab-b'" in other_tenant.stderr


class HashEmbedder:
    """A deterministic stand-in for MiniLM: a text's vector is derived from its hash (distinct texts are far
    apart); it counts what it encodes."""

    dim = 64

    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode(self, texts):
        self.texts += list(texts)
        rows = [
            np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=64)
            for t in texts
        ]
        return normalise(np.array(rows, dtype=np.float32).reshape(len(texts), self.dim))


class RecordingProposer(OfflineProposer):
    """The offline proposer, reading feedback like an LLM and keeping the requests it was given."""

    accepts_feedback = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[ProposalRequest] = []

    async def propose(self, request):
        self.requests.append(request)
        return await super().propose(request)


def test_a_replayed_state_is_the_live_state(toy_task, store, tmp_path):
    """What a step pod rebuilds from the store is what the local runtime held in memory at the end."""
    spec = RunSpec(
        task=str(toy_task),
        name="live",
        budget={"maxCandidates": 25},
        parallelism={"evaluators": 1, "proposers": 1, "proposalsAhead": 0},
    )
    evolution = Evolution(spec, load_task(toy_task), store, OfflineProposer(), tmp_path / "work")
    asyncio.run(evolution.run())
    live = evolution.state
    replayed = RunState.load(spec, load_task(toy_task), store, "live")
    assert live.observed == replayed.observed == 25 and live.proposals == replayed.proposals == 25
    assert live.best_score == replayed.best_score == store.best_node("live").score
    assert live.consecutive_failures == replayed.consecutive_failures
    assert live.spent_usd == replayed.spent_usd == 0.0
    assert [p.id for p in live.sampler.select().parents] == [p.id for p in replayed.sampler.select().parents]


def test_proposal_pods_started_together_draw_by_their_own_index(toy_task, store, tmp_path):
    """Proposal pods started at the same moment rebuild the same state from the store: the index the operator
    gives each one is what tells their parents and seeds apart (before it, every one proposed the same)."""
    spec = RunSpec(
        task=str(toy_task),
        name="pods",
        sampler={"kind": "random", "numInspirations": 0},
        budget={"maxCandidates": 12},
        parallelism={"evaluators": 1, "proposers": 1, "proposalsAhead": 0},
    )
    asyncio.run(Evolution(spec, load_task(toy_task), store, OfflineProposer(), tmp_path / "work").run())

    def proposed_by_a_pod(index: int) -> ProposalRequest:
        proposer = RecordingProposer()
        state = RunState.load(spec, load_task(toy_task), store, "pods")
        state.proposals = index  # what propose_step does with the pod's --index
        asyncio.run(propose(state, Agents(proposer=proposer, analyzer=OfflineAnalyzer())))
        return proposer.requests[0]

    requests = [proposed_by_a_pod(i) for i in range(12, 24)]
    assert len({r.seed for r in requests}) == 12
    assert len({r.parents[0].id for r in requests}) > 1
    again = proposed_by_a_pod(12)
    assert (again.seed, again.parents[0].id) == (requests[0].seed, requests[0].parents[0].id)  # deterministic


def test_propose_rejects_what_is_being_evaluated_and_what_is_stored(store, toy_task):
    ctx = put_run(store, toy_task)
    asyncio.run(propose_step(ctx, AGENTS, node_id="seed-0"))
    seed = store.get_node("seed-0")
    seed.stage, seed.score = Stage.EVALUATED, -8.5
    store.update_node(seed)
    state = RunState.load(ctx.spec, ctx.task, store, ctx.run.id)
    first = asyncio.run(propose(state, AGENTS))
    assert first.node.stage is Stage.PROPOSED and first.selection.parents == [seed]
    again = RunState.load(ctx.spec, ctx.task, store, ctx.run.id)  # the same history: the same proposal
    busy = asyncio.run(propose(again, AGENTS, in_flight={first.node.code_hash}))
    assert busy.node.code == first.node.code and busy.node.stage is Stage.REJECTED_NOVELTY
    assert busy.node.error == "identical to a candidate already being evaluated"
    store.add_node(first.node)
    stored = asyncio.run(propose(RunState.load(ctx.spec, ctx.task, store, ctx.run.id), AGENTS))
    assert stored.node.code != first.node.code  # the next index proposes anew


def test_the_initial_program_is_checked_when_it_is_proposed(store, tmp_path):
    task = write_task(
        tmp_path / "bad",
        program="import socket\n# EVOLVE-BLOCK-START\ndef solve():\n    return 3, -1\n# EVOLVE-BLOCK-END\n",
    )
    ctx = put_run(store, task)
    seed = asyncio.run(propose_step(ctx, AGENTS, node_id="seed-0"))
    assert seed.stage is Stage.REJECTED_STATIC and "'socket', which the task forbids" in seed.error
    assert store.get_node("seed-0").stage is Stage.REJECTED_STATIC  # never evaluated


def test_a_debug_retry_step_builds_on_the_failed_nodes_parents_with_its_error(store, toy_task, tmp_path):
    ctx = put_run(store, toy_task)
    proposer = RecordingProposer()
    agents = Agents(proposer, OfflineAnalyzer())
    asyncio.run(propose_step(ctx, agents, node_id="seed-0"))
    asyncio.run(evaluate_step(ctx, "seed-0", OneSlotEngineer(ctx.task, ctx.spec, tmp_path / "work")))
    failed = asyncio.run(propose_step(ctx, agents, node_id="c1"))
    failed.stage, failed.error = Stage.FAILED_QUICK, "quick stage: ValueError: boom"
    store.update_node(failed)
    retry = asyncio.run(propose_step(ctx, agents, node_id="c1d1", retry_of="c1"))
    assert retry.retry_of == "c1" and retry.attempt == 1 and retry.parent_ids == failed.parent_ids
    assert "ValueError: boom" in proposer.requests[-1].feedback
    with pytest.raises(StepError, match="node nope \\(to retry\\) is not in run k8s-run"):
        asyncio.run(propose_step(ctx, agents, node_id="c1d2", retry_of="nope"))


def test_the_task_cognition_is_stored_once_per_run(store, toy_task, tmp_path):
    (toy_task / "cognition").mkdir()
    (toy_task / "cognition" / "ideas.md").write_text("## Move x\nSource: a test\nMove x toward 3.\n")
    ctx = put_run(store, toy_task)
    agents = Agents(OfflineProposer(), OfflineAnalyzer(), embedder=HashEmbedder())
    asyncio.run(propose_step(ctx, agents, node_id="seed-0"))  # the run's first step
    assert [e.title for e in store.list_cognition("toy")] == ["Move x"]
    (toy_task / "cognition" / "later.md").write_text("## Move y\nSource: a test\nMove y toward -1.\n")
    asyncio.run(evaluate_step(ctx, "seed-0", OneSlotEngineer(ctx.task, ctx.spec, tmp_path / "work")))
    child = asyncio.run(propose_step(ctx, agents, node_id="cand-1"))
    assert child.stage is Stage.PROPOSED
    assert [e.title for e in store.list_cognition("toy")] == ["Move x"]  # later steps read the store only

    local = RunSpec(task=str(toy_task), name="local", budget={"maxCandidates": 3})
    embedder = HashEmbedder()
    evolution = Evolution(
        local, load_task(toy_task), store, OfflineProposer(), tmp_path / "w", embedder=embedder
    )
    assert [e.title for e in store.list_cognition("toy")] == ["Move x"]  # not when it is built
    asyncio.run(evolution.run())
    assert sorted(e.title for e in store.list_cognition("toy")) == ["Move x", "Move y"]  # when it starts
    assert sum("Move y" in t for t in embedder.texts) == 1
