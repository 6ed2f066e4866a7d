"""What the Researcher is told besides the programs: the analyses of the parent and inspirations, the
cognition entries and prior insights most similar to the parent's situation."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubevolve.core.models import CognitionEntry, Insight, Node
from kubevolve.core.spec import RetrievalSpec
from kubevolve.core.task import Task
from kubevolve.loop.learn.embeddings import Embedder, normalise
from kubevolve.store.base import Store

# The embedder reads only the first 256 word pieces of a text, and a task's description can fill them alone
# (linear_attention's takes 297): a query that began with it never reached the parent's motivation or
# analysis, and every parent retrieved the same entries. So the situation (motivation and analysis) and the
# description are embedded apart and mixed, the description with a small weight: it keeps the task's context
# (an entry must still relate to the task to pass the score threshold) without deciding the ranking.
DESCRIPTION_WEIGHT = 0.25


@dataclass
class RetrievedContext:
    """What retrieval found for one selection of parents and inspirations."""

    cognition: list[CognitionEntry] = field(default_factory=list)  # human priors, most similar first
    insights: list[Insight] = field(default_factory=list)  # lessons of other experiments of the run
    analyses: dict[str, str] = field(
        default_factory=dict
    )  # node id -> the analysis of that parent/inspiration


class Retriever:
    def __init__(self, store: Store, task: Task, run_id: str, spec: RetrievalSpec, embedder: Embedder):
        self.store = store
        self.task = task
        self.run_id = run_id
        self.spec = spec
        self.embedder = embedder
        self._texts: dict[str, str] = {i.id: i.text for i in store.list_insights(run_id)}

    def remember(self, insight: Insight) -> None:
        self._texts[insight.id] = insight.text

    def situation(self, parent: Node) -> str:
        """What the parent tried and what its analysis found."""
        analysis = self._texts.get(parent.insight_id or "", "")
        return "\n".join(text for text in (parent.motivation.strip(), analysis.strip()) if text)

    def query_vector(self, parent: Node) -> list[float]:
        """The parent's situation mixed with the task's description (DESCRIPTION_WEIGHT), unit length; the
        description alone when the situation is empty."""
        situation, description = self.situation(parent), self.task.spec.description
        if not situation:
            return [float(x) for x in self.embedder.encode([description])[0]]
        vectors = self.embedder.encode([situation, description])
        mixed = (1.0 - DESCRIPTION_WEIGHT) * vectors[0] + DESCRIPTION_WEIGHT * vectors[1]
        return [float(x) for x in normalise(mixed[None, :])[0]]

    def context(self, nodes: list[Node]) -> RetrievedContext:
        """Cognition entries, insights and analyses for a selection's parents and inspirations (parent first)."""
        analyses = {n.id: self._texts[n.insight_id] for n in nodes if n.insight_id in self._texts}
        if not (self.spec.cognition_top_k or self.spec.insights_top_k):
            return RetrievedContext(analyses=analyses)
        vector = self.query_vector(nodes[0])  # one query for both searches
        cognition: list[CognitionEntry] = []
        if self.spec.cognition_top_k:
            found = self.store.search_cognition(
                self.task.name, vector, self.spec.cognition_top_k, min_score=self.spec.cognition_min_score
            )
            cognition = [entry for entry, _ in found]
        insights: list[Insight] = []
        if self.spec.insights_top_k:
            own = {n.insight_id for n in nodes}
            found_insights = self.store.search_insights(
                self.run_id, vector, self.spec.insights_top_k + len(own)
            )
            insights = [i for i, _ in found_insights if i.id not in own][: self.spec.insights_top_k]
        return RetrievedContext(cognition, insights, analyses)
