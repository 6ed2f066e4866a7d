"""The data behind `kubevolve report` and `kubevolve ui`: one run read from the store and digested.

Kept apart from the drawing (charts.py) and the pages (page.py, observe/ui) so that what they say (the best
path, the best-so-far curve, failure reasons, the MAP-Elites grids, ...) can be read and tested without any
HTML, and so the rendering never touches the store.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kubevolve.core.models import Node, RunRecord, Stage
from kubevolve.core.spec import FeatureAxis, SamplerSpec, SpecError, parse_run_spec
from kubevolve.loop.budget import llm_cost as node_cost
from kubevolve.observe.progress import failure_kind
from kubevolve.store.base import Store

MAX_TREE_NODES = 5000  # above this, failed leaves are left out of the tree (they are still counted)
MAX_SCATTER_METRICS = 8
CODE_LENGTH = "code length (bytes)"  # the scatter's x choice that every candidate has


@dataclass
class RunSettings:
    """What the run's spec and task say about reading its nodes: the metric, and the sampler with its axes."""

    metric: str = "score"
    direction: str = "maximize"
    sampler: SamplerSpec | None = None  # None: neither the spec nor a readable task says which
    features: list[FeatureAxis] = field(default_factory=list)  # empty: unknown (the task is not readable)
    sampler_kind: str | None = None  # `sampler.kind`, or where the task is not here what a step recorded


def run_settings(record: RunRecord) -> RunSettings:
    """From the run's spec, and its task folder when it is at hand here (else the task facts the steps
    recorded: the metric and the kind of the task's sampler, not its settings)."""
    from kubevolve.core.task import load_task
    from kubevolve.loop.sample import sampler_settings

    settings = RunSettings()
    try:
        spec = parse_run_spec(record.spec)
    except SpecError:
        spec = None
    try:
        task = load_task(record.spec["task"])
    except Exception:  # not at hand here (another machine's path, a lab's own image): use what is recorded
        facts = record.task_facts
        if facts.get("metric"):
            settings.metric = facts["metric"]
            settings.direction = "maximize" if facts.get("maximize", True) else "minimize"
        if spec is not None and spec.sampler is not None:
            settings.sampler, settings.features = spec.sampler, list(spec.sampler.features or [])
        settings.sampler_kind = settings.sampler.kind if settings.sampler else facts.get("sampler")
        return settings
    settings.metric, settings.direction = task.spec.metric, task.spec.direction
    if spec is not None:
        settings.sampler, features = sampler_settings(spec, task)
        settings.features = list(features)
        settings.sampler_kind = settings.sampler.kind
    return settings


@dataclass
class RunData:
    record: RunRecord
    nodes: list[Node]
    by_id: dict[str, Node]
    best: Node | None
    initial: Node | None
    metric: str
    direction: str
    settings: RunSettings = field(default_factory=RunSettings)

    @property
    def evaluated(self) -> list[Node]:
        return [node for node, _ in self.scored]

    @property
    def scored(self) -> list[tuple[Node, float]]:
        """(node, score) of each evaluated node: the score as a number, for the plots."""
        return [(n, n.score) for n in self.nodes if n.stage is Stage.EVALUATED and n.score is not None]

    def best_path(self) -> list[Node]:
        """First parents from the initial program to the best node."""
        if self.best is None:
            return []
        chain, seen = [self.best], {self.best.id}
        while chain[-1].parent_ids and chain[-1].parent_ids[0] in self.by_id:
            parent = self.by_id[chain[-1].parent_ids[0]]
            if parent.id in seen:
                break
            chain.append(parent)
            seen.add(parent.id)
        return chain[::-1]


def load_run(store: Store, run_id: str) -> RunData:
    record = store.get_run(run_id)
    return run_data(record, list(store.iter_nodes(run_id)), store.best_node(run_id), run_settings(record))


def run_data(record: RunRecord, nodes: list[Node], best: Node | None, settings: RunSettings) -> RunData:
    """A run's data from nodes already read (in `seq` order), e.g. by a reader that follows the run live."""
    initial = next((n for n in nodes if not n.parent_ids), nodes[0] if nodes else None)
    return RunData(
        record=record,
        nodes=nodes,
        by_id={n.id: n for n in nodes},
        best=best,
        initial=initial,
        metric=settings.metric,
        direction=settings.direction,
        settings=settings,
    )


def metric_value(data: RunData, node: Node) -> float | None:
    """The task metric as the evaluator reported it (the score un-negated when the task minimises)."""
    if data.metric in node.metrics:
        return node.metrics[data.metric]
    return node.score


# ---- plot data -----------------------------------------------------------------------------------------
def best_so_far(data: RunData) -> list[tuple[int, float]]:
    """(seq, score) of each candidate that beat every earlier one: the steps of the best-so-far line."""
    records: list[tuple[int, float]] = []
    best = -math.inf
    for n, score in sorted(data.scored, key=lambda pair: pair[0].seq):
        if score > best:
            best = score
            records.append((n.seq, best))
    return records


def tree_layout(data: RunData) -> tuple[dict[str, tuple[int, float]], int]:
    """(depth, row) for each node of the first-parent tree, tidy: a parent sits at its children's middle."""
    nodes = data.nodes
    if len(nodes) > MAX_TREE_NODES:
        keep = {p for n in nodes for p in n.parent_ids[:1]} | {
            n.id for n in nodes if n.stage is Stage.EVALUATED
        }
        nodes = [n for n in nodes if n.id in keep]
    ids = {n.id for n in nodes}
    children: dict[str | None, list[Node]] = {}
    for n in nodes:
        parent = n.parent_ids[0] if n.parent_ids and n.parent_ids[0] in ids else None
        children.setdefault(parent, []).append(n)
    pos: dict[str, tuple[int, float]] = {}
    next_row = 0.0
    # iterative post-order (a greedy run's chain can be thousands deep)
    stack: list[tuple[Node, int, bool]] = [(n, 0, False) for n in reversed(children.get(None, []))]
    while stack:
        node, depth, expanded = stack.pop()
        kids = children.get(node.id, [])
        if not kids:
            pos[node.id] = (depth, next_row)
            next_row += 1
        elif expanded:
            rows = [pos[k.id][1] for k in kids]
            pos[node.id] = (depth, (min(rows) + max(rows)) / 2)
        else:
            stack.append((node, depth, True))
            stack.extend((k, depth + 1, False) for k in reversed(kids))
    return pos, int(next_row)


def elite_grids(data: RunData) -> list[dict[tuple[int, ...], Node]] | None:
    """Each island's MAP-Elites grid (cell -> its best node) as the run's sampler holds it now, rebuilt by
    replaying the nodes through the sampler itself (migrations included); None for other samplers, or when
    the feature axes are unknown here."""
    settings = data.settings
    if settings.sampler is None or settings.sampler.kind != "map_elites" or not settings.features:
        return None
    from kubevolve.loop.sample.map_elites import MapElitesSampler

    sampler = MapElitesSampler(settings.sampler, settings.features, random.Random(0))  # replay draws nothing
    for node in data.nodes:
        sampler.observe(node)
    return [island.grid for island in sampler.islands]


def scatter_metrics(data: RunData) -> list[str]:
    """x-axis choices for the island scatter: the evaluators' other metrics, then the program's length."""
    counts: Counter[str] = Counter()
    for n in data.evaluated:
        for key, value in n.metrics.items():
            if key != data.metric and isinstance(value, int | float) and math.isfinite(value):
                counts[key] += 1
    return [k for k, _ in counts.most_common(MAX_SCATTER_METRICS - 1)] + [CODE_LENGTH]


def x_value(node: Node, metric: str) -> float | None:
    """A node's value of one scatter x choice; None where it has no finite one (it is left off that plot)."""
    if metric == CODE_LENGTH:
        return float(len(node.code.encode()))
    value = node.metrics.get(metric)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


# ---- tables and figures --------------------------------------------------------------------------------
def failure_counts(data: RunData) -> Counter[tuple[str, str]]:
    """(outcome, reason) of every candidate that did not make it, counted; the reason in words."""
    return Counter(
        (str(n.stage), failure_kind(n).words)
        for n in data.nodes
        if n.stage not in (Stage.EVALUATED, Stage.PROPOSED)
    )


def llm_cost(data: RunData) -> float:
    """US dollars spent on the LLM, proposals and analyses together."""
    return sum(node_cost(n) for n in data.nodes)


def run_seconds(data: RunData) -> float:
    """From the run's creation to its last update or its latest candidate, whichever came later."""
    last = max([data.record.updated_at, *(n.created_at for n in data.nodes)])
    return last - data.record.created_at


def node_details(data: RunData) -> dict[str, dict[str, Any]]:
    """What a click shows about each node, JSON-ready (no NaN or infinity)."""
    return {
        n.id: {
            "seq": n.seq,
            "stage": str(n.stage),
            "score": finite(n.score),
            "island": n.island,
            "generation": n.generation,
            "parent": n.parent_ids[0] if n.parent_ids else None,
            "proposer": n.proposer,
            "motivation": n.motivation[:400],
            "error": n.error[:400],
            "metrics": {k: finite(v) for k, v in list(n.metrics.items())[:12]},
        }
        for n in data.nodes
    }


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a value is shown as its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
