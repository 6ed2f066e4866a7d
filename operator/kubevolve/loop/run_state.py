"""The Researcher's supporting state during a run: retrieval, the novelty filter, the model ensemble's
bandit and the money spent. Everything here is rebuilt from the stored nodes on resume (`observe`).

Without an embedder (the offline default) retrieval and the embedding novelty filter are off: the offline
proposer cannot read a prompt, and its literal tweaks are near-duplicates by design.
"""

from __future__ import annotations

from kubevolve.core.models import Insight, Node, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import Task
from kubevolve.loop.engineer.novelty import NoveltyFilter
from kubevolve.loop.learn.cognition import load_cognition, sync_cognition
from kubevolve.loop.learn.retrieval import Retriever
from kubevolve.loop.llm.ensemble import CostAwareBandit
from kubevolve.loop.sample.base import Selection
from kubevolve.store.base import NotFound, Store


def llm_cost(node: Node) -> float:
    return node.llm.get("cost_usd", 0.0) + node.llm.get("analysis_cost_usd", 0.0)


class ResearchKit:
    def __init__(
        self,
        spec: RunSpec,
        task: Task,
        store: Store,
        run_id: str,
        embedder=None,
        bandit: CostAwareBandit | None = None,
    ):
        self.spec = spec
        self.store = store
        self.embedder = embedder
        self.bandit = bandit
        self.spent_usd = 0.0
        self._scores: dict[str, float | None] = {}
        self.retriever: Retriever | None = None
        self.novelty: NoveltyFilter | None = None
        if embedder is not None:
            if task.cognition_dir.is_dir():
                sync_cognition(store, load_cognition(task.cognition_dir, task.name), embedder)
            self.retriever = Retriever(store, task, run_id, spec.retrieval, embedder)
            self.novelty = NoveltyFilter(
                task, embedder, spec.engineer.novelty_threshold, spec.engineer.novelty_window
            )

    def observe(self, node: Node) -> None:
        """A committed node (live, or replayed on resume)."""
        self.spent_usd += llm_cost(node)
        self._scores[node.id] = node.score if node.stage is Stage.EVALUATED else None
        if self.novelty is not None:
            self.novelty.remember(node)
        if self.bandit is not None and node.proposer.startswith("llm:"):
            parent = self._parent_score(node)
            gain = (node.score - parent) if node.score is not None and parent is not None else 0.0
            self.bandit.update(
                node.proposer[4:], gain if node.stage is Stage.EVALUATED else 0.0, llm_cost(node)
            )

    def _parent_score(self, node: Node) -> float | None:
        if not node.parent_ids:
            return None
        pid = node.parent_ids[0]
        if pid not in self._scores:
            try:
                parent = self.store.get_node(pid)
                self._scores[pid] = parent.score if parent.stage is Stage.EVALUATED else None
            except NotFound:
                self._scores[pid] = None
        return self._scores[pid]

    def observe_insight(self, insight: Insight, node: Node) -> None:
        self.spent_usd += node.llm.get("analysis_cost_usd", 0.0)
        if self.retriever is not None:
            self.retriever.remember(insight)

    def context(self, selection: Selection):
        if self.retriever is None:
            return None
        return self.retriever.context([*selection.parents, *selection.inspirations])

    def novelty_reason(self, node: Node) -> str | None:
        return None if self.novelty is None else self.novelty.check(node)
