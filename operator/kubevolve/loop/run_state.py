"""A run's state as the steps see it: the sampler, retrieval, the novelty filter, the model ensemble's bandit,
and the counters the budget reads (nodes, proposals, consecutive failures, best score, money spent).

All of it is derived from the stored nodes: `replay` rebuilds it by observing every node in `seq` order. The
local runtime builds it once per run and feeds it each node it stores (`observe`); a Kubernetes step pod
rebuilds it for its one step (`RunState.load`). Either way the same history gives the same state.

Without an embedder (the offline default) retrieval is off: the offline proposer cannot read a prompt. The
novelty filter needs no embedder and is always on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterator

import numpy as np

from kubevolve.core.models import Insight, Node, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import Task
from kubevolve.loop.budget import BudgetVerdict, analysis_cost, check_budget, failure_streak, llm_cost
from kubevolve.loop.engineer.novelty import NoveltyFilter
from kubevolve.loop.learn.embeddings import Embedder
from kubevolve.loop.learn.retrieval import RetrievedContext, Retriever
from kubevolve.loop.llm.ensemble import CostAwareBandit
from kubevolve.loop.offload import off_loop
from kubevolve.loop.sample import make_sampler, sampler_settings
from kubevolve.loop.sample.base import Sampler, Selection
from kubevolve.store.base import NotFound, Store

NEIGHBOUR_POOL = 64  # final nodes kept for the LLM judge's neighbour search, at least


def neighbour_text(task: Task, node: Node) -> str:
    """What a candidate's embedding is made of for the LLM judge's neighbours: its motivation and its evolve
    blocks (the whole program if it has none)."""
    try:
        blocks = "\n".join(task.split(node.code).blocks)
    except ValueError:
        blocks = node.code
    return f"{node.motivation}\n{blocks}"


class RunState:
    """One run's state for the steps: what `observe` has seen, and what `propose` asks of it."""

    def __init__(
        self,
        spec: RunSpec,
        task: Task,
        store: Store,
        run_id: str,
        *,
        embedder: Embedder | None = None,
        bandit: CostAwareBandit | None = None,
    ):
        self.spec = spec
        self.task = task
        self.store = store
        self.run_id = run_id
        self.embedder = embedder
        self.bandit = bandit
        sampler_spec, features = sampler_settings(spec, task)
        self.sampler: Sampler = make_sampler(sampler_spec, features, spec.seed)
        self.observed = 0  # nodes observed (stored), any stage
        self.proposals = 0  # proposal indices handed out; each seeds one proposal (`proposal_seed`)
        self.consecutive_failures = 0
        self.best_score: float | None = None
        self.spent_usd = 0.0
        self._scores: dict[str, float | None] = {}  # node id -> score, for the bandit's reward
        self.island_best: dict[int, Node] = {}  # the best evaluated node of each island, for the Analyzer
        # the latest final nodes with an embedding: where the LLM judge's nearest neighbours are looked up
        self._embedded: deque[Node] = deque(maxlen=max(spec.engineer.novelty_window, NEIGHBOUR_POOL))
        self.retriever: Retriever | None = None
        # False while the embedding model loads as a local run starts: proposals then get the analyses of their
        # parents and inspirations but no cognition or insights (retrieval needs the model), and need not wait
        self.retrieval_ready = True
        self.novelty = NoveltyFilter()
        if embedder is not None:
            self.retriever = Retriever(store, task, run_id, spec.retrieval, embedder)

    @classmethod
    def load(
        cls,
        spec: RunSpec,
        task: Task,
        store: Store,
        run_id: str,
        *,
        embedder: Embedder | None = None,
        bandit: CostAwareBandit | None = None,
    ) -> RunState:
        """The state after every stored node of the run (a step pod's view, built for one step)."""
        state = cls(spec, task, store, run_id, embedder=embedder, bandit=bandit)
        for _ in state.replay():
            pass
        return state

    def replay(self) -> Iterator[Node]:
        """Observe the run's stored nodes in `seq` order, yielding each for the caller's own bookkeeping."""
        for node in self.store.iter_nodes(self.run_id):
            self.observe(node)
            yield node

    # ---- what the run has done -------------------------------------------------------------------------
    def observe(self, node: Node) -> None:
        """A stored node (live, or replayed): every count and model that depends on the run's history."""
        self.sampler.observe(node)
        self.observed += 1
        self.proposals = max(self.proposals, self.observed)
        self.consecutive_failures = failure_streak(self.consecutive_failures, node)
        evaluated = node.stage is Stage.EVALUATED
        if evaluated and node.score is not None and (self.best_score is None or node.score > self.best_score):
            self.best_score = node.score
        held = self.island_best.get(node.island)
        if (
            evaluated
            and node.score is not None
            and (held is None or held.score is None or node.score > held.score)
        ):
            self.island_best[node.island] = node
        if node.embedding is not None and node.stage.is_final:
            self._embedded.append(node)
        self.spent_usd += llm_cost(node)
        self._scores[node.id] = node.score if node.stage is Stage.EVALUATED else None
        self.novelty.remember(node)
        if self.bandit is not None and node.proposer.startswith("llm:"):
            parent = self._parent_score(node)
            gain = (node.score - parent) if node.score is not None and parent is not None else 0.0
            self.bandit.update(
                node.proposer[4:], gain if node.stage is Stage.EVALUATED else 0.0, llm_cost(node)
            )

    def observe_insight(self, insight: Insight, node: Node) -> None:
        """The analysis of an observed node was stored: its cost counts, and retrieval can find it."""
        self.spent_usd += analysis_cost(node)
        if self.retriever is not None:
            self.retriever.remember(insight)

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

    # ---- what the steps ask ----------------------------------------------------------------------------
    def next_proposal(self) -> int:
        """The index of the next proposal (its seed derives from it), counted."""
        index = self.proposals
        self.proposals += 1
        return index

    def context(self, selection: Selection, failed: Node | None = None) -> RetrievedContext | None:
        """What the Researcher is told about a selection besides the programs (None: retrieval is off); for a
        debug retry of `failed`, its error is one more retrieval query."""
        if self.retriever is None:
            return None
        feedback = failed.error if failed is not None else ""
        return self.retriever.context([*selection.parents, *selection.inspirations], feedback)

    def neighbours(self, node: Node, k: int, selection: Selection) -> list[tuple[Node, float | None]]:
        """The k earlier candidates most like `node`: by embedding (cosine similarity, most similar first)
        among the latest final nodes and the selection's, then the selection's parents and inspirations that
        have no embedding (the initial program, or every node when embeddings are off), with no similarity."""
        if k <= 0:
            return []
        relatives = [*selection.parents, *selection.inspirations]
        pool = {n.id: n for n in [*self._embedded, *relatives] if n.id != node.id}
        vector = node.embedding
        if vector is None and self.retriever is not None and self.retrieval_ready:
            text = neighbour_text(self.task, node)
            node.embedding = vector = self.retriever.embedder.encode([text])[0].tolist()
        scored: list[tuple[Node, float | None]] = []
        if vector is not None:
            query = np.asarray(vector, dtype=np.float32)
            scored = [
                (n, float(np.asarray(n.embedding, dtype=np.float32) @ query))
                for n in pool.values()
                if n.embedding is not None and len(n.embedding) == len(query)
            ]
            scored.sort(key=lambda pair: -(pair[1] or 0.0))
        shown = {n.id for n, _ in scored}
        related = {n.id for n in relatives}
        scored += [(n, None) for n in pool.values() if n.id not in shown and n.id in related]
        return scored[:k]

    async def retrieve(self, selection: Selection, failed: Node | None = None) -> RetrievedContext | None:
        """`context`, run off the event loop (its embeddings and searches take milliseconds of CPU); only the
        analyses while retrieval is not ready (`retrieval_ready`)."""
        if self.retriever is None:
            return None
        if not self.retrieval_ready:
            return RetrievedContext(
                analyses=self.retriever.analyses([*selection.parents, *selection.inspirations])
            )
        return await off_loop(self.context, selection, failed)

    def novelty_reason(self, node: Node, in_flight: Container[str] = frozenset()) -> str | None:
        """Why a fingerprinted candidate repeats an experiment already run or in flight, or None."""
        return self.novelty.check(node, in_flight)

    def target_score(self) -> float | None:
        """`budget.targetScore` in score units (higher is better)."""
        target = self.spec.budget.target_score
        return None if target is None else self.task.score_of({self.task.spec.metric: target})

    def verdict(self, started_at: float, now: float | None = None) -> BudgetVerdict | None:
        """Why the run must stop now (its budget), or None."""
        return check_budget(
            self.spec.budget,
            candidates=self.observed,
            started_at=started_at,
            best_score=self.best_score,
            target_score=self.target_score(),
            consecutive_failures=self.consecutive_failures,
            llm_cost=self.spent_usd,
            now=now,
        )
