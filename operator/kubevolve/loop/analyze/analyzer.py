"""The Analyzer: distils one experiment into a short insight that later proposals retrieve.

Two implementations share one interface: the LLM Analyzer (reads the diff, the metrics against the parent and
the best, and the evaluator's artifacts) and the offline analyzer here, which writes a factual summary so the
embedded default keeps the same data flow: every evaluated or failed candidate gets an insight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kubevolve.core.models import Insight, Node, Stage
from kubevolve.core.task import Task
from kubevolve.store.base import Store

if TYPE_CHECKING:  # the operator imports this module for ANALYSED_STAGES: no numpy for it
    from kubevolve.loop.learn.embeddings import Embedder

ANALYSED_STAGES = (Stage.EVALUATED, Stage.FAILED_QUICK, Stage.FAILED_FULL)


@dataclass
class AnalysisRequest:
    task: Task
    node: Node
    parent: Node | None
    best: Node | None  # the run's best node when the candidate was analysed (may be the node itself)


@dataclass
class Analysis:
    text: str
    analyzer: str
    llm: dict[str, float] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)


class Analyzer(Protocol):
    name: str

    async def analyze(self, request: AnalysisRequest) -> Analysis: ...


def _metric_changes(node: Node, parent: Node | None) -> str:
    if not node.metrics:
        return ""
    parts = []
    for name, value in sorted(node.metrics.items()):
        before = parent.metrics.get(name) if parent else None
        parts.append(f"{name} {value:.6g}" if before is None else f"{name} {before:.6g} -> {value:.6g}")
    return "; ".join(parts)


class OfflineAnalyzer:
    """A factual summary of one candidate, with no LLM: what changed, what it scored, how it ended."""

    name = "offline"

    async def analyze(self, request: AnalysisRequest) -> Analysis:
        node, parent, best = request.node, request.parent, request.best
        metric = request.task.spec.metric
        lines = [
            f"Candidate #{node.seq} (generation {node.generation}): {node.motivation or 'no motivation given'}."
        ]
        if node.stage is Stage.EVALUATED and node.score is not None:
            verdict = (
                "no parent"
                if parent is None or parent.score is None
                else (
                    "improved on its parent"
                    if node.score > parent.score
                    else "matched its parent"
                    if node.score == parent.score
                    else "was worse than its parent"
                )
            )
            lines.append(f"It was evaluated and {verdict}: {_metric_changes(node, parent)}.")
            if best is not None and best.score is not None:
                where = (
                    "It is the best so far."
                    if best.id == node.id
                    else (
                        f"The best so far scores {best.metrics.get(metric, best.score):.6g} (node {best.id})."
                    )
                )
                lines.append(where)
        else:
            lines.append(f"It failed ({node.stage}): {node.error}.")
        for name, text in list(node.artifacts.items())[:2]:
            lines.append(f"{name}: {text.strip()[:300]}")
        return Analysis(text=" ".join(lines), analyzer=self.name)


async def analyze_and_store(
    store: Store, analyzer: Analyzer, task: Task, node: Node, embedder: Embedder | None = None
) -> Insight:
    """Analyse a committed node, store the insight (embedded, for retrieval) and link it from the node."""
    parent = store.get_node(node.parent_ids[0]) if node.parent_ids else None
    best = store.best_node(node.run_id)
    analysis = await analyzer.analyze(AnalysisRequest(task=task, node=node, parent=parent, best=best))
    insight = Insight(run_id=node.run_id, text=analysis.text, node_ids=[node.id])
    if embedder is not None:
        insight.embedding = embedder.encode([analysis.text])[0].tolist()
    insight = store.add_insight(insight)
    node.insight_id = insight.id
    for key, value in analysis.llm.items():
        node.llm[f"analysis_{key}"] = node.llm.get(f"analysis_{key}", 0.0) + value
    node.transcript.extend(analysis.transcript)
    store.update_node(node)
    return insight
