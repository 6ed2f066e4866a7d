"""What the Researcher is told besides the programs: the analyses of the parent and inspirations, and the
cognition entries and prior insights most relevant to them.

Retrieval follows the context. Each sampled node (the parent and every inspiration) is one query, from its
analysis, else its motivation; a debug retry adds one more, from the failed attempt's feedback. Each query
searches the store, and the hits of all queries are merged: an item's relevance is its best similarity to
any query, and the `k` items are picked by maximal marginal relevance (MMR): each next pick maximises
`lambda * relevance - (1 - lambda) * (its highest similarity to an item already picked)`, so a near-copy of a
picked entry loses its place to something the prompt does not yet hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from kubevolve.core.models import CognitionEntry, Insight, Node, analysis_text
from kubevolve.core.spec import RetrievalSpec
from kubevolve.core.task import Task
from kubevolve.loop.learn.cognition import embedding_text
from kubevolve.loop.learn.embeddings import Embedder, normalise
from kubevolve.store.base import Store

# The embedder reads only the first 256 word pieces of a text, and a task's description can fill them alone
# (linear_attention's takes 297): a query that began with it never reached the parent's motivation or
# analysis, and every parent retrieved the same entries. So each context's text and the description are
# embedded apart and mixed, the description with a small weight: it keeps the task's context (an entry must
# still relate to the task to pass the score threshold) without deciding the ranking.
DESCRIPTION_WEIGHT = 0.25
POOL_FACTOR = 3  # each query fetches k * POOL_FACTOR hits, so MMR has alternatives to a near-copy

_T = TypeVar("_T")


@dataclass
class RetrievedContext:
    """What retrieval found for one selection of parents and inspirations."""

    cognition: list[CognitionEntry] = field(default_factory=list)  # human priors, picked by MMR, best first
    insights: list[Insight] = field(default_factory=list)  # lessons of other experiments of the run
    analyses: dict[str, str] = field(
        default_factory=dict
    )  # node id -> the analysis of that parent/inspiration


@dataclass
class _Hit(Generic[_T]):
    item: _T
    relevance: float  # the best cosine similarity to any query
    vector: np.ndarray  # unit length


def mmr(hits: Sequence[_Hit[_T]], k: int, lambda_: float) -> list[_T]:
    """The k hits picked by maximal marginal relevance, in the order picked (the most relevant first)."""
    remaining = list(hits)
    picked: list[_Hit[_T]] = []
    while remaining and len(picked) < k:
        if picked:
            chosen = np.stack([h.vector for h in picked])
            redundancy = [float(np.max(chosen @ h.vector)) for h in remaining]
        else:
            redundancy = [0.0] * len(remaining)
        scores = [
            lambda_ * h.relevance - (1.0 - lambda_) * r for h, r in zip(remaining, redundancy, strict=True)
        ]
        picked.append(remaining.pop(int(np.argmax(scores))))
    return [h.item for h in picked]


class Retriever:
    def __init__(self, store: Store, task: Task, run_id: str, spec: RetrievalSpec, embedder: Embedder):
        self.store = store
        self.task = task
        self.run_id = run_id
        self.spec = spec
        self.embedder = embedder
        self._texts: dict[str, str] = {i.id: i.text for i in store.list_insights(run_id)}
        self._description: np.ndarray | None = None  # the task description's vector, encoded once

    def remember(self, insight: Insight) -> None:
        self._texts[insight.id] = insight.text

    def analysis_of(self, node: Node) -> str:
        """The node's analysis as text: its structured analysis, else its insight's text ("" if neither)."""
        return analysis_text(node.analysis) or self._texts.get(node.insight_id or "", "").strip()

    def situation(self, node: Node) -> str:
        """What a context node's query says: its analysis, else its motivation."""
        return self.analysis_of(node) or node.motivation.strip()

    def query_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text, each mixed with the task's description (DESCRIPTION_WEIGHT); the
        description alone for an empty text."""
        fresh = [t for t in dict.fromkeys(texts) if t]
        wanted = fresh + ([self.task.spec.description] if self._description is None else [])
        encoded = self.embedder.encode(wanted) if wanted else np.zeros((0, 1), dtype=np.float32)
        if self._description is None:
            self._description = np.asarray(encoded[-1], dtype=np.float32)
        by_text = dict(zip(fresh, encoded[: len(fresh)], strict=True))
        rows = [
            (1.0 - DESCRIPTION_WEIGHT) * by_text[t] + DESCRIPTION_WEIGHT * self._description
            if t
            else self._description
            for t in texts
        ]
        return normalise(np.stack(rows))

    def query_vector(self, parent: Node) -> list[float]:
        """The query of one node (its situation mixed with the description), as floats."""
        return [float(x) for x in self.query_vectors([self.situation(parent)])[0]]

    def analyses(self, nodes: list[Node]) -> dict[str, str]:
        """The analyses of these nodes that are stored (node id -> its text): no embedding needed."""
        return {n.id: text for n in nodes if (text := self.analysis_of(n))}

    def context(self, nodes: list[Node], feedback: str = "") -> RetrievedContext:
        """Cognition entries, insights and analyses for a selection's parents and inspirations (parent first);
        `feedback`, a debug retry's account of the failed attempt, is one more query."""
        analyses = self.analyses(nodes)
        if not (self.spec.cognition_top_k or self.spec.insights_top_k):
            return RetrievedContext(analyses=analyses)
        texts = list(dict.fromkeys(self.situation(n) for n in nodes))
        if feedback.strip():
            texts.append(feedback.strip())
        texts = [t for t in texts if t] or [""]  # nothing known yet: the description alone
        vectors = self.query_vectors(texts)
        cognition: list[CognitionEntry] = []
        if self.spec.cognition_top_k:
            k = self.spec.cognition_top_k
            cognition = self._pick(
                vectors,
                lambda v: self.store.search_cognition(
                    self.task.name, v, k * POOL_FACTOR, min_score=self.spec.cognition_min_score
                ),
                lambda e: e.id,
                lambda e: e.embedding,
                embedding_text,
                k,
            )
        insights: list[Insight] = []
        if self.spec.insights_top_k:
            k = self.spec.insights_top_k
            own = {n.insight_id for n in nodes if n.insight_id}
            insights = self._pick(
                vectors,
                lambda v: [
                    (i, s)
                    for i, s in self.store.search_insights(self.run_id, v, k * POOL_FACTOR + len(own))
                    if i.id not in own and s >= self.spec.insights_min_score
                ],
                lambda i: i.id,
                lambda i: i.embedding,
                lambda i: i.text,
                k,
            )
        return RetrievedContext(cognition, insights, analyses)

    def _pick(
        self,
        vectors: np.ndarray,
        search: Callable[[list[float]], list[tuple[_T, float]]],
        key: Callable[[_T], str],
        stored: Callable[[_T], list[float] | None],
        text: Callable[[_T], str],
        k: int,
    ) -> list[_T]:
        """Search once per query vector, merge the hits (best similarity wins) and pick k by MMR."""
        best: dict[str, tuple[_T, float]] = {}
        for vector in vectors:
            for item, score in search([float(x) for x in vector]):
                if key(item) not in best or score > best[key(item)][1]:
                    best[key(item)] = (item, float(score))
        if not best:
            return []
        items = list(best.values())
        missing = [item for item, _ in items if stored(item) is None]
        encoded = (
            dict(zip(map(key, missing), self.embedder.encode([text(i) for i in missing]), strict=True))
            if missing
            else {}
        )
        hits = [
            _Hit(item, score, np.asarray(encoded.get(key(item), stored(item)), dtype=np.float32))
            for item, score in items
        ]
        for hit in hits:
            hit.vector = normalise(hit.vector[None, :])[0]
        hits.sort(key=lambda h: -h.relevance)
        return mmr(hits, k, self.spec.mmr_lambda)
