"""The Analyzer: distils one experiment into a structured analysis (what changed, the observed effect, its
likely cause, what to try next) that is stored with the node, shown when the node is a later proposal's
parent or inspiration, and kept as an insight that later proposals retrieve.

Two implementations share one interface: the LLM Analyzer (llm_analyzer.py) and the offline analyzer here,
which writes a factual account with no LLM, so the embedded default keeps the same data flow. Every evaluated
or failed candidate is analysed by the run's Analyzer (`analyzer.mode`); a proposal rejected before evaluation
(a static check, a duplicate, the LLM judge) is analysed offline, at once and for free, so the loop learns
why an idea was refused without paying an LLM for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Insight, Node, Stage, analysis_text
from kubevolve.core.task import Task
from kubevolve.store.base import Store

if TYPE_CHECKING:  # the operator imports this module for ANALYSED_STAGES: no numpy for it
    from kubevolve.loop.learn.embeddings import Embedder

ANALYSED_STAGES = (Stage.EVALUATED, Stage.FAILED_QUICK, Stage.FAILED_FULL)  # by the run's Analyzer
# proposals rejected before evaluation that carry an idea worth a lesson (an LLM outage or an answer that
# could not be read has none: the candidate is its parent's program again)
ANALYSED_REJECTIONS = frozenset(
    {
        FailureKind.PROGRAM_TOO_LARGE,
        FailureKind.SYNTAX_ERROR,
        FailureKind.FROZEN_CODE_EDITED,
        FailureKind.FORBIDDEN_IMPORT,
        FailureKind.MISSING_NAME,
        FailureKind.DUPLICATE,
        FailureKind.NEAR_DUPLICATE,
        FailureKind.LLM_JUDGE_REJECTED,
    }
)
# what the offline analysis suggests after each kind of refusal or failure
NEXT_AFTER = {
    FailureKind.PROGRAM_TOO_LARGE: "make the change smaller; the program must stay under the task's size limit",
    FailureKind.SYNTAX_ERROR: "keep the idea, but write it as valid Python",
    FailureKind.FROZEN_CODE_EDITED: "make the change inside the EVOLVE-BLOCK only, keeping its markers",
    FailureKind.FORBIDDEN_IMPORT: "reach the same effect without the forbidden module",
    FailureKind.MISSING_NAME: "keep every top-level name the task requires",
    FailureKind.DUPLICATE: "this exact program was already tried: change something else",
    FailureKind.NEAR_DUPLICATE: "this idea was already tried in almost the same form: try a different one",
    FailureKind.LLM_JUDGE_REJECTED: "address the judge's objection or try a different idea",
    FailureKind.EARLY_REJECTION: "the change made the metric worse than the task accepts: try another direction",
    FailureKind.TIMEOUT: "the program ran too long: make it cheaper",
    FailureKind.MEMORY_LIMIT: "the program used too much memory: make it leaner",
    FailureKind.CPU_LIMIT: "the program used too much CPU time: make it cheaper",
}


def is_analysed_rejection(node: Node) -> bool:
    """A proposal rejected before evaluation whose idea gets an (offline) analysis."""
    return (
        node.stage in (Stage.REJECTED_STATIC, Stage.REJECTED_NOVELTY)
        and node.failure in ANALYSED_REJECTIONS
        and bool(node.motivation.strip())
    )


def wants_analysis(node: Node) -> bool:
    """A final node that has no insight yet and is analysed: an experiment, or a rejection with an idea."""
    return not node.insight_id and (node.stage in ANALYSED_STAGES or is_analysed_rejection(node))


@dataclass
class AnalysisRequest:
    task: Task
    node: Node
    parent: Node | None
    best: Node | None  # the run's best node when the candidate was analysed (may be the node itself)
    island_best: Node | None = None  # the best node of the candidate's island (None: as `best`)


@dataclass
class Analysis:
    fields: dict[str, str]  # ANALYSIS_FIELDS -> text; a part the Analyzer did not give is absent or ""
    analyzer: str
    llm: dict[str, float] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The insight's text: the labelled parts on one line (a retrieved insight is one bullet)."""
        return analysis_text(self.fields, sep=" ")


class Analyzer(Protocol):
    name: str

    async def analyze(self, request: AnalysisRequest) -> Analysis: ...


def metric_changes(node: Node, parent: Node | None) -> str:
    """`name before -> after` for each metric of the node (its value alone where the parent lacks it)."""
    parts = []
    for name, value in sorted(node.metrics.items()):
        before = parent.metrics.get(name) if parent else None
        parts.append(f"{name} {value:.6g}" if before is None else f"{name} {before:.6g} -> {value:.6g}")
    return "; ".join(parts)


def diff_size(node: Node) -> str:
    """'+3/-1 lines' of the node's diff ("" without one)."""
    lines = node.diff.splitlines()
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    return f"+{added}/-{removed} lines" if added or removed else ""


def _against(node: Node, other: Node | None, label: str, metric: str) -> str:
    if other is None or other.score is None:
        return ""
    if other.id == node.id:
        return f"It is the {label}."
    value = other.metrics.get(metric, other.score)
    return f"The {label} scores {value:.6g} (node {other.id})."


class OfflineAnalyzer:
    """A factual account of one candidate, with no LLM: what changed, what it scored or why it was refused,
    and the usual next step after that outcome."""

    name = "offline"

    async def analyze(self, request: AnalysisRequest) -> Analysis:
        return Analysis(offline_fields(request), analyzer=self.name)


def offline_fields(request: AnalysisRequest) -> dict[str, str]:
    node, parent = request.node, request.parent
    metric = request.task.spec.metric
    size = diff_size(node)
    changed = (
        f"Candidate #{node.seq} (generation {node.generation}): {node.motivation or 'no motivation given'}"
    )
    changed += f" ({size})." if size else "."
    fields = {"changed": changed}
    if node.stage is Stage.EVALUATED and node.score is not None:
        if parent is None or parent.score is None:
            verdict, step = "has no parent to compare with", ""
        elif node.score > parent.score:
            verdict, step = "improved on its parent", "build on this change"
        elif node.score == parent.score:
            verdict, step = "matched its parent", "this change did not matter: try a bolder one"
        else:
            verdict, step = "was worse than its parent", "revert this change or try another direction"
        effect = [f"It was evaluated and {verdict}: {metric_changes(node, parent)}."]
        effect.append(_against(node, request.best, "best so far", metric))
        if request.island_best is not None and request.island_best.id != (request.best and request.best.id):
            effect.append(_against(node, request.island_best, f"best on island {node.island}", metric))
        for name, text in list(node.artifacts.items())[:2]:
            effect.append(f"{name}: {text.strip()[:300]}")
        fields["effect"] = " ".join(e for e in effect if e)
        fields["next"] = step
        return fields
    kind = node.failure.words if node.failure else "unknown"
    if node.stage in (Stage.REJECTED_STATIC, Stage.REJECTED_NOVELTY):
        fields["effect"] = f"It was rejected before evaluation ({kind}): {node.error}"
        fields["cause"] = f"the {kind} check refused it"
    else:
        fields["effect"] = f"It failed ({node.stage}, {kind}): {node.error}"
        tail = node.log_tail.strip().splitlines()
        fields["cause"] = tail[-1][:300] if tail else kind
    fields["next"] = (
        NEXT_AFTER.get(node.failure, "fix the failure or try a different idea") if node.failure else ""
    )
    return fields


def island_best(store: Store, run_id: str, island: int) -> Node | None:
    """The evaluated node with the highest score on one island (earliest on ties)."""
    best: Node | None = None
    for node in store.list_nodes(run_id, stages=[Stage.EVALUATED], island=island):
        if node.score is not None and (best is None or best.score is None or node.score > best.score):
            best = node
    return best


async def analyze_and_store(
    store: Store,
    analyzer: Analyzer,
    task: Task,
    node: Node,
    embedder: Embedder | None = None,
    *,
    island_best: Node | None = None,
    give_up: asyncio.Event | None = None,
) -> Insight:
    """Analyse a committed node, store the analysis with the node and as an insight (embedded, for retrieval),
    linked from the node. `give_up`: once set (the run is ending), an embedding model still loading is not
    waited for and the insight is stored without an embedding (listed with its node, not found by
    similarity)."""
    parent = store.get_node(node.parent_ids[0]) if node.parent_ids else None
    best = store.best_node(node.run_id)
    request = AnalysisRequest(task=task, node=node, parent=parent, best=best, island_best=island_best)
    analysis = await analyzer.analyze(request)
    text = analysis.text or "(the Analyzer returned nothing)"
    insight = Insight(run_id=node.run_id, text=text, node_ids=[node.id])
    if embedder is not None:  # on the embedding service's thread, batched with what else waits
        from kubevolve.loop.learn.embeddings import encode_unless

        vectors = await encode_unless(embedder, [text], give_up)
        insight.embedding = None if vectors is None else vectors[0].tolist()
    insight = store.add_insight(insight)
    node.insight_id = insight.id
    node.analysis = {k: v.strip() for k, v in analysis.fields.items() if v.strip()}
    node.analysis["analyzer"] = analysis.analyzer
    for key, value in analysis.llm.items():
        node.llm[f"analysis_{key}"] = node.llm.get(f"analysis_{key}", 0.0) + value
    node.transcript.extend(analysis.transcript)
    store.update_node(node)
    return insight
