"""The Analyzer: what its prompt holds (through the real client, against a local OpenAI-protocol server), its
structured answer stored with the node and used when the node is a later context, the offline analysis of
rejected proposals (locally and in a proposal step), `analyzer.mode: off`, and nodes stored before analyses."""

from __future__ import annotations

import asyncio
import json

import pytest

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, RunRecord, Stage
from kubevolve.core.spec import RunSpec, SpecError, parse_run_spec
from kubevolve.core.task import load_task
from kubevolve.loop.agents import Agents, make_agents
from kubevolve.loop.analyze.analyzer import OfflineAnalyzer, analyze_and_store, wants_analysis
from kubevolve.loop.analyze.llm_analyzer import LLMAnalyzer, is_curve, parse_analysis
from kubevolve.loop.llm.client import LLMClient
from kubevolve.loop.research.proposal import Proposal, ProposalRequest
from kubevolve.loop.research.researcher import researcher_messages
from kubevolve.loop.steps import load_context, propose_step
from kubevolve.runtime.kubernetes.snapshot import needs_analysis
from kubevolve.runtime.local import Evolution
from kubevolve.sdk.training.curve import Curve
from kubevolve.store.codec import node_columns, node_from_row
from kubevolve.store.sqlite import SQLiteStore
from kubevolve.store.weaviate import node_props
from tests.kit.openai_server import OpenAIServer, Reply
from tests.kit.toy_task import TOY_PROGRAM

ANSWER = (
    "**WHAT CHANGED:** x moved from 0.5 to 2.0.\n"
    "OBSERVED EFFECT: f rose from -8.5 to -3.25;\nthe curve flattened by step 20.\n"
    "Likely cause: f is a concave quadratic with its optimum at x = 3.\n"
    "NEXT: move y toward -1 as well."
)


def child_of(parent_code: str) -> str:
    return parent_code.replace("    x = 0.5\n", "    x = 2.0  # CHILD-LINE\n")


def curve_text() -> str:
    curve = Curve()
    for step in (10, 20):
        curve.add(step, step * 64, step * 0.1, eval_f=-3.25 - 1 / step)
    return curve.to_text("CURVE-TITLE: toy training")


@pytest.fixture
def experiment(store, toy_task):
    """A run with a parent, a better node elsewhere (the best) and the island's best, and a child of the
    parent with metrics, a training curve and a per-benchmark table."""
    task = load_task(toy_task)
    store.put_run(RunRecord(id="run", task="toy", spec={}))
    parent_code = TOY_PROGRAM.replace("    y = 0.5\n", "    y = 0.5  # PARENT-LINE\n")

    def add(code: str, f: float, island: int, **fields) -> Node:
        node = Node(run_id="run", code=code, stage=Stage.EVALUATED, metrics={"f": f, "x": 0.5}, score=f)
        node.island = island
        for key, value in fields.items():
            setattr(node, key, value)
        return store.add_node(node)

    parent = add(parent_code, -8.5, 1, artifacts={"per_case": "PARENT-TABLE case1 0.10"})
    best = add(TOY_PROGRAM.replace("0.5", "2.9"), -0.02, 0)
    island_best = add(TOY_PROGRAM.replace("0.5", "1.5"), -4.75, 1)
    child = Node(
        run_id="run",
        code=child_of(parent_code),
        parent_ids=[parent.id],
        island=1,
        motivation="MOTIVATION-TEXT: move x toward 3.",
        diff="--- parent\n+++ candidate\n-    x = 0.5\n+    x = 2.0  # CHILD-LINE\n",
        metrics={"f": -3.25, "x": 2.0},
        score=-3.25,
        stage=Stage.EVALUATED,
        artifacts={"loss_curve": curve_text(), "per_case": "CHILD-TABLE case1 0.72"},
    )
    return task, parent, best, island_best, store.add_node(child)


def llm_spec(server: OpenAIServer, toy_task, **fields) -> RunSpec:
    llm = {"endpoint": server.url, "model": "scripted-1", "inputCostPerMtok": 1.0, "maxRetries": 0}
    return RunSpec(task=str(toy_task), name="run", llm=llm, **fields)


def test_the_analyzers_prompt_holds_every_input_and_its_answer_is_stored_structured(
    experiment, store, toy_task
):
    task, parent, best, island_best, child = experiment
    with OpenAIServer(lambda body, index: Reply(ANSWER)) as server:
        spec = llm_spec(server, toy_task, analyzer={"model": "analyst", "inputCostPerMtok": 3.0})
        agents = make_agents(spec)
        assert isinstance(agents.analyzer, LLMAnalyzer) and agents.analyzer.model == "analyst"

        async def go():
            try:
                return await analyze_and_store(store, agents.analyzer, task, child, island_best=island_best)
            finally:
                await agents.close()

        insight = asyncio.run(go())
        (request,) = server.requests
        (prompt,) = server.prompts()
    assert request["model"] == "analyst" and request["temperature"] == 0.2
    assert prompt.startswith("You are the Analyzer")
    inputs = {
        "task description": "Maximise f(x, y) = -(x - 3)^2 - (y + 1)^2",
        "motivation": "MOTIVATION-TEXT: move x toward 3.",
        "parent's evolve block": "y = 0.5  # PARENT-LINE",
        "child's evolve block": "x = 2.0  # CHILD-LINE",
        "the diff": "+    x = 2.0  # CHILD-LINE",
        "delta against the parent": "-8.5 (+5.25)",
        "delta against the best": "-0.02 (-3.23)",
        "delta against the island's best": "-4.75 (+1.5)",
        "columns": "| metric | candidate | parent (Δ) | best so far (Δ) | island's best (Δ) |",
        "training curve": "CURVE-TITLE: toy training",
        "per-benchmark table": "CHILD-TABLE case1 0.72",
        "the parent's table beside it": "PARENT-TABLE case1 0.10",
        "outcome": "Outcome: evaluated",
    }
    missing = [name for name, text in inputs.items() if text not in prompt]
    assert not missing, prompt
    curves, tables = prompt.index("## Training curves"), prompt.index("## Per-benchmark tables")
    assert curves < prompt.index("CURVE-TITLE") < tables < prompt.index("CHILD-TABLE")

    stored = store.get_node(child.id)
    assert stored.analysis == {
        "changed": "x moved from 0.5 to 2.0.",
        "effect": "f rose from -8.5 to -3.25; the curve flattened by step 20.",
        "cause": "f is a concave quadratic with its optimum at x = 3.",
        "next": "move y toward -1 as well.",
        "analyzer": "llm",
    }
    assert stored.insight_id == insight.id and "What to try next: move y toward -1 as well." in insight.text
    assert stored.llm["analysis_cost_usd"] > 0 and stored.transcript[-1]["purpose"] == "analyzer"


def test_a_rejected_or_failed_candidate_shows_its_reason_to_the_analyzer(experiment, store, toy_task):
    task, parent, *_ = experiment
    early = Node(
        run_id="run",
        code=child_of(parent.code),
        parent_ids=[parent.id],
        motivation="a bold x",
        metrics={"f": -2000.0},
    ).fail(
        Stage.FAILED_QUICK, FailureKind.EARLY_REJECTION, "quick stage: f = -2000 is below the threshold -1000"
    )
    static = Node(
        run_id="run", code="import socket\n" + parent.code, parent_ids=[parent.id], motivation="use a socket"
    ).fail(Stage.REJECTED_STATIC, FailureKind.FORBIDDEN_IMPORT, "imports forbidden module 'socket'")
    with OpenAIServer(lambda body, index: Reply(ANSWER)) as server:
        client = LLMClient(llm_spec(server, toy_task).llm)

        async def go():
            try:
                for node in (early, static):
                    await analyze_and_store(store, LLMAnalyzer(client), task, store.add_node(node))
            finally:
                await client.close()

        asyncio.run(go())
        early_prompt, static_prompt = server.prompts()
    assert (
        "failed_quick (early rejection). Reason: quick stage: f = -2000 is below the threshold"
        in early_prompt
    )
    assert (
        "rejected before evaluation (forbidden import). Reason: imports forbidden module 'socket'"
        in static_prompt
    )


def test_an_endpoint_failure_leaves_the_offline_analysis_and_says_so(experiment, store, toy_task):
    task, *_, child = experiment
    with OpenAIServer(lambda body, index: Reply(status=500, error="down")) as server:
        client = LLMClient(llm_spec(server, toy_task).llm)
        asyncio.run(analyze_and_store(store, LLMAnalyzer(client), task, child))
        asyncio.run(client.close())
    stored = store.get_node(child.id)
    assert stored.analysis["analyzer"].startswith("offline: the LLM Analyzer failed (LLM request to")
    assert "improved on its parent: f -8.5 -> -3.25" in stored.analysis["effect"]


@pytest.mark.parametrize(
    ("answer", "fields"),
    [
        (
            "WHAT CHANGED: a\nOBSERVED EFFECT: b\nLIKELY CAUSE: c\nNEXT: d",
            {"changed": "a", "effect": "b", "cause": "c", "next": "d"},
        ),
        ("## What changed: a\n- **Likely cause**: c\n  more of c", {"changed": "a", "cause": "c more of c"}),
        ("INSIGHT: the change moved f.", {"effect": "INSIGHT: the change moved f."}),
        ("", {}),
    ],
)
def test_answers_are_parsed_by_their_labels(answer, fields):
    assert parse_analysis(answer) == fields


def test_curves_are_told_from_tables():
    assert is_curve("mqar_curve", "anything") and is_curve("log", curve_text())
    assert not is_curve("mqar_accuracy", "length  accuracy\n64  0.91")


# ---- the analysis as a later context ------------------------------------------------------------------------
def test_a_parents_analysis_and_an_inspirations_motivation_reach_the_researchers_prompt(toy_task):
    task = load_task(toy_task)
    parent = Node(
        run_id="r",
        code=task.initial_code,
        score=-8.5,
        motivation="PARENT-MOTIVATION",
        analysis={"next": "TRY-Y"},
    )
    inspiration = Node(run_id="r", code=task.initial_code, score=-9.0, motivation="INSPIRATION-MOTIVATION")
    request = ProposalRequest(task=task, parents=[parent], inspirations=[inspiration], seed=1)
    request.analyses = {parent.id: "What to try next: TRY-Y"}
    prompt = researcher_messages(request, "auto")[1]["content"]
    assert "Motivation: PARENT-MOTIVATION\nAnalysis:\nWhat to try next: TRY-Y" in prompt
    assert "## Program A (score -9; none)\nMotivation: INSPIRATION-MOTIVATION\n```python" in prompt


# ---- rejected proposals get an analysis --------------------------------------------------------------------
class Refused:
    """Proposes a forbidden import, then the initial program again (a duplicate), then a good change."""

    name = "refused"
    accepts_feedback = False

    def __init__(self) -> None:
        self.calls = 0

    async def propose(self, request: ProposalRequest) -> Proposal:
        self.calls += 1
        code = request.parents[0].code
        if self.calls == 1:
            code = code.replace("# EVOLVE-BLOCK-START\n", "# EVOLVE-BLOCK-START\nimport socket\n")
            return Proposal(code=code, motivation="talk to a server for the answer", proposer=self.name)
        if self.calls == 2:
            return Proposal(code=code, motivation="keep the program as it is", proposer=self.name)
        return Proposal(code=code.replace("0.5", "1.5", 1), motivation="x nearer 3", proposer=self.name)


def test_rejected_proposals_are_analysed_offline_in_a_local_run(toy_task, store, tmp_path):
    spec = RunSpec(
        task=str(toy_task),
        name="run",
        budget={"maxCandidates": 4},
        parallelism={"evaluators": 1, "proposers": 1, "proposalsAhead": 0},
    )
    asyncio.run(Evolution(spec, load_task(toy_task), store, Refused(), tmp_path / "work").run())
    nodes = store.list_nodes("run")
    forbidden, duplicate = nodes[1], nodes[2]
    assert forbidden.failure is FailureKind.FORBIDDEN_IMPORT and duplicate.failure is FailureKind.DUPLICATE
    insights = {i.id: i.text for i in store.list_insights("run")}
    for node in (forbidden, duplicate):
        assert node.insight_id in insights and node.analysis["analyzer"] == "offline"
        assert node.analysis["effect"].startswith(f"It was rejected before evaluation ({node.failure.words})")
        assert node.error in insights[node.insight_id]
    assert "without the forbidden module" in forbidden.analysis["next"]
    assert all(n.insight_id for n in nodes)  # the evaluated ones too


def test_a_proposal_step_analyses_its_rejection_at_once(toy_task, store):
    spec = RunSpec(task=str(toy_task), name="run")
    store.put_run(RunRecord(id="run", task="toy", spec=spec.to_dict()))
    seed = Node(run_id="run", code=load_task(toy_task).initial_code, stage=Stage.EVALUATED, score=-8.5)
    store.add_node(seed)
    node = asyncio.run(propose_step(load_context(store, "run"), Agents(Refused(), OfflineAnalyzer())))
    assert node.stage is Stage.REJECTED_STATIC and node.insight_id
    assert store.get_node(node.id).analysis["cause"] == "the forbidden import check refused it"
    assert not needs_analysis(store.get_node(node.id), spec)  # no analysis Job for it


def test_an_answer_that_could_not_be_read_is_not_analysed():
    node = Node(run_id="r", code="").fail(
        Stage.REJECTED_STATIC, FailureKind.MALFORMED_ANSWER, "no MOTIVATION"
    )
    assert not wants_analysis(node)
    node.motivation = "an idea"
    assert not wants_analysis(node)  # a malformed answer is not an idea the checks refused


# ---- analyzer.mode ------------------------------------------------------------------------------------------
def test_analyzer_off_writes_no_analysis(toy_task, store, tmp_path):
    spec = RunSpec(
        task=str(toy_task),
        name="run",
        analyzer={"mode": "off"},
        budget={"maxCandidates": 4},
        parallelism={"evaluators": 1, "proposers": 1, "proposalsAhead": 0},
    )
    agents = make_agents(spec)
    assert agents.analyzer is None
    asyncio.run(Evolution(spec, load_task(toy_task), store, Refused(), tmp_path / "work").run())
    nodes = store.list_nodes("run")
    assert len(nodes) == 4 and store.list_insights("run") == []
    assert not any(n.insight_id or n.analysis for n in nodes)
    assert not needs_analysis(nodes[-1], spec) and needs_analysis(nodes[-1], RunSpec(task="t"))


def test_analyzer_settings_are_checked():
    assert RunSpec(task="t").analyzer_mode == "offline"
    assert RunSpec(task="t", llm={"endpoint": "http://x/v1"}).analyzer_mode == "llm"
    assert (
        RunSpec(task="t", llm={"endpoint": "http://x/v1"}, analyzer={"mode": "offline"}).analyzer_mode
        == "offline"
    )
    with pytest.raises(
        SpecError, match="analyzer.mode is llm, but neither analyzer.endpoint nor llm.endpoint"
    ):
        parse_run_spec({"task": "t", "analyzer": {"mode": "llm"}})
    with pytest.raises(SpecError, match="spec.analyzer.mode: Input should be 'llm', 'offline' or 'off'"):
        parse_run_spec({"task": "t", "analyzer": {"mode": "sometimes"}})
    # its own endpoint is enough, with the offline Researcher
    agents = make_agents(
        parse_run_spec({"task": "t", "analyzer": {"mode": "llm", "endpoint": "http://x/v1"}})
    )
    assert isinstance(agents.analyzer, LLMAnalyzer) and agents.proposer.name == "offline"
    assert agents.analyzer.client.spec.endpoint == "http://x/v1" and agents.analyzer.model == "gpt-4o-mini"
    asyncio.run(agents.close())


# ---- stored data: nodes written before analyses and verdicts existed ----------------------------------------
def test_a_node_stored_before_analyses_existed_reads_without_one(tmp_path):
    """`analysis` and `judge` live in a node's JSON (no column, no schema version): an older row lacks them and
    reads with {} from both stores' codec; a node that has them keeps them through either store."""
    node = Node(
        run_id="r", code="x = 1\n", analysis={"next": "more"}, judge={"verdict": "pass", "reason": "new"}
    )
    old = json.loads(node_columns(node)[4])
    del old["analysis"], old["judge"]
    read = node_from_row((0, json.dumps(old), None))
    assert read.analysis == {} and read.judge == {}
    props, _ = node_props(node, 0)
    assert node_from_row((0, props["data"], None)).analysis == {"next": "more"}
    store = SQLiteStore(tmp_path / "s.db")
    store.put_run(RunRecord(id="r", task="t", spec={}))
    stored = store.add_node(node)
    assert store.get_node(stored.id).judge == {"verdict": "pass", "reason": "new"}
    conn = store._conn()
    conn.execute("UPDATE nodes SET data = ? WHERE id = ?", (json.dumps(old | {"id": node.id}), node.id))
    conn.commit()
    assert store.get_node(node.id).analysis == {}
    store.close()
