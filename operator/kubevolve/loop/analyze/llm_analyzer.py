"""The LLM Analyzer: reads one whole experiment and answers with a structured analysis.

Its prompt (templates `analyzer_system.md` and `analyzer.md`) holds the task's description, the evolve blocks
of the parent and the candidate and the diff between them, the candidate's metrics against its parent, the
best node so far and its island's best (with the differences), the outcome (for a failed or rejected
candidate, the reason and the end of its log), and the evaluator's artifacts: training curves apart from the
per-benchmark tables, the parent's tables beside the candidate's. Its answer is four labelled parts (WHAT
CHANGED, OBSERVED EFFECT, LIKELY CAUSE, NEXT); an answer without labels is kept whole as the observed effect.
When the endpoint fails, the offline analysis stands in, and says so.
"""

from __future__ import annotations

import logging
import re

from kubevolve.core.models import Node, Stage
from kubevolve.loop.analyze.analyzer import Analysis, AnalysisRequest, offline_fields
from kubevolve.loop.llm.client import LLMClient, LLMError
from kubevolve.loop.llm.prompts import evolve_blocks, render

log = logging.getLogger(__name__)

ARTIFACT_CHARS = 2000  # of each artifact (its end: a curve's last rows, a table's totals)
PARENT_TABLE_CHARS = 1200
CODE_CHARS = 8000  # of each evolve block, and of the diff
CURVE_HEADER = re.compile(r"\(\d+ rows, \d+ shown\)")  # the first line of sdk.training.Curve.to_text
_LABEL = re.compile(
    r"^[\s#*_>-]*(what changed|observed effect|effect|likely cause|cause|what to try next|try next|next)"
    r"[\s*_]*:[\s*_]*(.*)$",
    re.IGNORECASE,
)
_FIELD = {
    "what changed": "changed",
    "observed effect": "effect",
    "effect": "effect",
    "likely cause": "cause",
    "cause": "cause",
    "what to try next": "next",
    "try next": "next",
    "next": "next",
}


def parse_analysis(text: str) -> dict[str, str]:
    """The labelled parts of an Analyzer's answer (continuation lines join their part); an answer with no
    label at all is the observed effect, whole."""
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _LABEL.match(line)
        if match:
            current = _FIELD[match.group(1).lower()]
            fields.setdefault(current, []).append(match.group(2).strip())
        elif current is not None and line.strip():
            fields[current].append(line.strip())
    if not fields:
        return {"effect": text.strip()} if text.strip() else {}
    return {name: " ".join(p for p in parts if p) for name, parts in fields.items()}


def is_curve(name: str, text: str) -> bool:
    """A training curve (by its name, or by the header `Curve.to_text` writes) rather than a table."""
    first = text.lstrip().split("\n", 1)[0]
    return "curve" in name.lower() or bool(CURVE_HEADER.search(first))


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def metric_table(node: Node, parent: Node | None, best: Node | None, island: Node | None) -> str:
    """A markdown table: each metric of the candidate against its parent, the best and the island's best,
    with the differences (candidate minus other)."""
    others = [("parent", parent), ("best so far", best), ("island's best", island)]
    others = [(label, other) for label, other in others if other is not None]
    names = list(dict.fromkeys([*node.metrics, *(parent.metrics if parent else {})]))
    if not names:
        return "no metrics (the candidate was not evaluated, and has no parent with metrics)"
    header = "| metric | candidate | " + " | ".join(f"{label} (Δ)" for label, _ in others) + " |"
    rows = [header, "|" + "---|" * (2 + len(others))]
    for name in names:
        mine = node.metrics.get(name)
        cells = []
        for _, other in others:
            theirs = other.metrics.get(name) if other else None
            delta = f" ({mine - theirs:+.4g})" if mine is not None and theirs is not None else ""
            cells.append(_format(theirs) + delta)
        rows.append(f"| {name} | {_format(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def outcome(node: Node) -> str:
    """The candidate's outcome, with the reason when it was rejected or failed."""
    if node.stage is Stage.EVALUATED:
        return "evaluated"
    kind = f" ({node.failure.words})" if node.failure else ""
    if node.stage in (Stage.REJECTED_STATIC, Stage.REJECTED_NOVELTY):
        return f"rejected before evaluation{kind}. Reason: {node.error}"
    return f"{node.stage}{kind}. Reason: {node.error}"


def artifact_sections(node: Node, parent: Node | None) -> tuple[str, str]:
    """(training curves, per-benchmark tables and other artifacts) as prompt sections."""
    curves = [
        f"### {name}\n```\n{text[-ARTIFACT_CHARS:].strip()}\n```"
        for name, text in node.artifacts.items()
        if is_curve(name, text)
    ]
    tables = [
        f"### {name} (candidate)\n```\n{text[-ARTIFACT_CHARS:].strip()}\n```"
        for name, text in node.artifacts.items()
        if not is_curve(name, text)
    ]
    if parent is not None and node.stage is Stage.EVALUATED:
        tables += [
            f"### {name} (parent)\n```\n{text[-PARENT_TABLE_CHARS:].strip()}\n```"
            for name, text in parent.artifacts.items()
            if not is_curve(name, text)
        ]
    if node.stage is not Stage.EVALUATED and node.log_tail.strip():
        tables.append(f"### log tail\n```\n{node.log_tail[-1500:].strip()}\n```")
    return "\n".join(curves) or "none", "\n".join(tables) or "none"


def analyzer_messages(request: AnalysisRequest) -> list[dict[str, str]]:
    node, task, parent = request.node, request.task, request.parent
    curves, tables = artifact_sections(node, parent)
    island = request.island_best
    if island is not None and request.best is not None and island.id == request.best.id:
        island = None  # the same node: one column is enough
    user = render(
        "analyzer",
        task,
        motivation=node.motivation or "none given",
        outcome=outcome(node),
        metric_table=metric_table(node, parent, request.best, island),
        parent_code=evolve_blocks(task, parent.code, CODE_CHARS)
        if parent
        else "(no parent: this is the initial program)",
        child_code=evolve_blocks(task, node.code, CODE_CHARS),
        diff=(node.diff or "(no diff: the initial program)")[-CODE_CHARS:].rstrip("\n"),
        curves=curves,
        tables=tables,
    )
    return [
        {"role": "system", "content": render("analyzer_system", task)},
        {"role": "user", "content": user},
    ]


class LLMAnalyzer:
    name = "llm"

    def __init__(self, client: LLMClient, model: str | None = None):
        self.client = client
        self.model = model

    async def analyze(self, request: AnalysisRequest) -> Analysis:
        try:
            completion = await self.client.complete(analyzer_messages(request), model=self.model)
        except LLMError as err:
            log.warning(
                "the LLM Analyzer failed on node %s; the offline analysis stands in: %s", request.node.id, err
            )
            return Analysis(offline_fields(request), analyzer=f"offline: the LLM Analyzer failed ({err})")
        return Analysis(
            parse_analysis(completion.text),
            analyzer=self.name,
            llm={
                "prompt_tokens": float(completion.prompt_tokens),
                "completion_tokens": float(completion.completion_tokens),
                "cost_usd": completion.cost_usd,
            },
            transcript=[completion.record("analyzer")],
        )
