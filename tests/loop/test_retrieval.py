"""Retrieval per context: one query per sampled node (from its analysis, else its motivation) and one for a
debug retry's failure, merged by maximal marginal relevance (MMR). The real MiniLM model on the bundled
linear_attention base shows that contexts whose analyses differ retrieve different priors; a hand-made vector
space shows exactly what MMR does with a near-copy."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kubevolve.cli.app import app
from kubevolve.core.models import CognitionEntry, Insight, Node, RunRecord, Stage
from kubevolve.core.spec import RetrievalSpec
from kubevolve.core.task import load_task
from kubevolve.loop.learn.cognition import embedding_text, load_cognition, sync_cognition
from kubevolve.loop.learn.embeddings import get_embedder, normalise
from kubevolve.loop.learn.retrieval import Retriever, mmr
from tests.kit.paths import REPO

LINEAR_ATTENTION = REPO / "tasks" / "linear_attention"


@pytest.fixture(scope="module")
def embedder():
    emb = get_embedder()
    emb.encode(["warm up"])
    return emb


@pytest.fixture(scope="module")
def base(embedder) -> list[CognitionEntry]:
    entries = load_cognition(LINEAR_ATTENTION / "cognition", "linear_attention")
    for entry, vector in zip(entries, embedder.encode([embedding_text(e) for e in entries]), strict=True):
        entry.embedding = vector.tolist()
    return entries


def analysed(motivation: str, **analysis: str) -> Node:
    return Node(run_id="run-1", code="", motivation=motivation, analysis=analysis, stage=Stage.EVALUATED)


# ---- contexts whose analyses differ retrieve differently (MiniLM, the linear_attention base) ----------------
def test_parents_with_one_motivation_and_different_analyses_retrieve_different_priors(store, embedder, base):
    sync_cognition(store, copy.deepcopy(base), embedder)
    retriever = Retriever(store, load_task(LINEAR_ATTENTION), "run-1", RetrievalSpec(), embedder)
    motivation = "Change the mixer to improve MQAR recall."

    def titles(node: Node) -> list[str]:
        return [e.title for e in retriever.context([node]).cognition]

    forgetting = titles(
        analysed(
            motivation,
            effect="Recall fell at long lengths: mqar_acc_len256 0.41 -> 0.22 while short lengths held.",
            cause="The state never forgets, so stale key-value pairs interfere at long lengths.",
            next="Add a data-dependent forget gate (decay) to the state.",
        )
    )
    feature_map = titles(
        analysed(
            motivation,
            effect="Recall stayed at chance: keys and queries match too softly.",
            cause="The elu+1 feature map is too smooth to separate keys.",
            next="Use a sharper feature map, such as a second-order Taylor expansion of exp.",
        )
    )
    assert forgetting != feature_map and len(forgetting) == len(feature_map) == 4
    assert any("gate" in t.lower() or "decay" in t.lower() for t in forgetting)
    assert any("Taylor" in t for t in feature_map) and not any("Taylor" in t for t in forgetting)
    bare = titles(analysed(motivation))  # no analysis: the motivation alone is the query
    assert bare not in (forgetting, feature_map)


def test_each_inspiration_and_the_failure_of_a_retry_add_their_own_query(store, embedder, base):
    sync_cognition(store, copy.deepcopy(base), embedder)
    retriever = Retriever(store, load_task(LINEAR_ATTENTION), "run-1", RetrievalSpec(), embedder)
    parent = analysed("Add a scalar forget gate to the delta rule so the state can drop stale pairs.")
    inspiration = analysed(
        "Replace the feature map.",
        next="Try a second-order Taylor feature map on a small projection of q and k.",
    )
    alone = [e.title for e in retriever.context([parent]).cognition]
    together = [e.title for e in retriever.context([parent, inspiration]).cognition]
    assert not any("Taylor" in t for t in alone) and any("Taylor" in t for t in together)
    assert alone[0] in together  # the parent's best match stays
    retry = [
        e.title
        for e in retriever.context(
            [parent], "quick stage: causality check failed: the output at position 3 depends on position 7"
        ).cognition
    ]
    assert retry != alone and "Causal means per position, in both modes" in retry


def test_an_analysis_is_preferred_to_the_motivation_and_an_insight_stands_in_for_it(store, embedder):
    task = load_task(LINEAR_ATTENTION)
    store.put_run(RunRecord(id="run-1", task=task.name, spec={}))
    insight = store.add_insight(Insight(run_id="run-1", text="the lesson of that experiment"))
    retriever = Retriever(store, task, "run-1", RetrievalSpec(), embedder)
    with_insight = Node(run_id="run-1", code="", motivation="the idea", insight_id=insight.id)
    assert retriever.situation(with_insight) == "the lesson of that experiment"
    structured = analysed("the idea", changed="the change", next="the next step")
    assert retriever.situation(structured) == "What changed: the change\nWhat to try next: the next step"
    assert retriever.situation(Node(run_id="run-1", code="", motivation="the idea")) == "the idea"
    assert retriever.analysis_of(Node(run_id="run-1", code="", motivation="the idea")) == ""


# ---- MMR, in a vector space made by hand -------------------------------------------------------------------
A = [1.0, 0.0, 0.0]
A_TWIN = [0.995, 0.0998, 0.0]  # cosine 0.995 with A: the same idea reworded
B = [0.0, 1.0, 0.0]
DESCRIPTION = [0.0, 0.0, 1.0]
QUERY = [1.0, 0.8, 0.0]  # nearest the twin, then A, then B


class TableEmbedder:
    """Texts map to fixed vectors (unknown texts to the description's axis): every similarity is known."""

    dim = 3

    def __init__(self, table: dict[str, list[float]]):
        self.table = table

    def encode(self, texts):
        return normalise(np.asarray([self.table.get(t, DESCRIPTION) for t in texts], dtype=np.float32))


def entry(title: str, vector: list[float]) -> CognitionEntry:
    unit = np.asarray(vector) / np.linalg.norm(vector)
    return CognitionEntry(
        collection="toy", title=title, text=title, source="made up", embedding=unit.tolist()
    )


@pytest.mark.parametrize(("mmr_lambda", "picked"), [(1.0, ["twin", "a"]), (0.7, ["twin", "b"])])
def test_mmr_drops_a_near_identical_entry(store, toy_task, mmr_lambda, picked):
    store.add_cognition([entry("a", A), entry("twin", A_TWIN), entry("b", B)])
    embedder = TableEmbedder({"the parent's analysis": QUERY})
    spec = RetrievalSpec(cognitionTopK=2, mmrLambda=mmr_lambda, insightsTopK=0)
    retriever = Retriever(store, load_task(toy_task), "run-1", spec, embedder)
    parent = Node(run_id="run-1", code="", motivation="the parent's analysis")
    assert [e.title for e in retriever.context([parent]).cognition] == picked


def test_mmr_picks_by_relevance_first_then_against_redundancy():
    from kubevolve.loop.learn.retrieval import _Hit

    def hit(name: str, relevance: float, vector: list[float]) -> _Hit[str]:
        return _Hit(name, relevance, normalise(np.asarray([vector], dtype=np.float32))[0])

    hits = [hit("a", 0.9, A), hit("twin", 0.89, A_TWIN), hit("b", 0.5, B)]
    assert mmr(hits, 3, 0.7) == ["a", "b", "twin"]
    assert mmr(hits, 3, 1.0) == ["a", "twin", "b"]
    assert mmr(hits, 0, 0.7) == [] and mmr([], 3, 0.7) == []


def test_insights_below_their_threshold_and_the_contexts_own_are_left_out(store, toy_task):
    store.put_run(RunRecord(id="run-1", task="toy", spec={}))
    own = store.add_insight(Insight(run_id="run-1", text="own", embedding=A))
    near = store.add_insight(Insight(run_id="run-1", text="near", embedding=A_TWIN))
    store.add_insight(Insight(run_id="run-1", text="far", embedding=[-1.0, 0.0, 0.0]))
    embedder = TableEmbedder({"own": A})  # the parent's query is its analysis: its own insight's text
    spec = RetrievalSpec(cognitionTopK=0, insightsTopK=3, insightsMinScore=0.1)
    retriever = Retriever(store, load_task(toy_task), "run-1", spec, embedder)
    parent = Node(run_id="run-1", code="", motivation="the idea", insight_id=own.id)
    assert [i.id for i in retriever.context([parent]).insights] == [near.id]


# ---- what was retrieved is visible --------------------------------------------------------------------------
def test_show_lists_what_retrieval_put_into_the_prompt(store, tmp_path):
    store.put_run(RunRecord(id="run-1", task="toy", spec={}))
    prior = entry("Move each coordinate to its optimum", A)
    store.add_cognition([prior])
    lesson = store.add_insight(Insight(run_id="run-1", text="What changed: x to 2. Observed effect: f rose."))
    node = store.add_node(
        Node(run_id="run-1", code="x = 1\n", retrieved={"cognition": [prior.id], "insights": [lesson.id]})
    )
    runner = CliRunner()
    text = runner.invoke(app, ["show", node.id, "--store", str(store.path)]).stdout
    assert f"cognition {prior.id}: Move each coordinate to its optimum" in text
    assert f"insight {lesson.id}: What changed: x to 2. Observed effect: f rose." in text
    data = json.loads(runner.invoke(app, ["show", node.id, "--json", "--store", str(store.path)]).stdout)
    assert data["retrieved_items"]["cognition"] == [
        {"id": prior.id, "title": "Move each coordinate to its optimum", "source": "made up"}
    ]
    assert data["retrieved_items"]["insights"] == [{"id": lesson.id, "text": lesson.text}]
