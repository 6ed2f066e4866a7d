"""What the run browser's API answers, as JSON-ready dicts: built from the report's data and charts
(observe/report), so the live page and `kubevolve report` say the same things about a run.

Everything returned here is JSON as the standard library writes it strictly: no NaN or infinity (shown as
their text, like the report does), and whatever else json cannot encode shown as its text.
"""

from __future__ import annotations

from typing import Any

from kubevolve.core.liveness import dead_reason
from kubevolve.core.models import Node, RunRecord, Stage
from kubevolve.core.spec import SpecError, parse_run_spec
from kubevolve.observe.report.charts import (
    STAGE_COLOURS,
    elites_grid,
    outcome_bar,
    score_plot,
    tree_json,
)
from kubevolve.observe.report.data import (
    elite_grids,
    finite,
    llm_cost,
    metric_value,
    run_seconds,
)
from kubevolve.observe.ui.live import RunFollower
from kubevolve.store.base import Store

SHORT = 160  # characters of a motivation or an error in a row of the node list


def jsonable(value: Any) -> Any:
    """`value` with every non-finite float, and anything json cannot encode, replaced by its text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return finite(value)
    return str(value)


def run_row(record: RunRecord, counts: dict[Stage, int], best: Node | None) -> dict[str, Any]:
    """One line of the run list."""
    return {
        "id": record.id,
        "task": record.task,
        "phase": str(record.phase),
        "dead": dead_reason(record),  # a local run whose record says Running and whose process is gone
        "message": record.message,
        "candidates": sum(counts.values()),
        "evaluated": counts.get(Stage.EVALUATED, 0),
        "max_candidates": _budget(record).get("maxCandidates"),
        "best_score": finite(best.score) if best else None,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def runs_view(store: Store) -> dict[str, Any]:
    return {"runs": [run_row(r, store.count_nodes(r.id), store.best_node(r.id)) for r in store.list_runs()]}


def _budget(record: RunRecord) -> dict[str, Any]:
    """The run's budget with its defaults filled in (camelCase, as in the run's YAML)."""
    try:
        return parse_run_spec(record.spec).budget.model_dump(by_alias=True)
    except SpecError:
        return {}


def node_row(node: Node) -> dict[str, Any]:
    """What the tree, the node list and the search need of a node."""
    return {
        "id": node.id,
        "seq": node.seq,
        "parent": node.parent_ids[0] if node.parent_ids else None,
        "stage": str(node.stage),
        "score": finite(node.score),
        "island": node.island,
        "generation": node.generation,
        "proposer": node.proposer,
        "motivation": node.motivation[:SHORT],
        "error": node.error[:SHORT],
        "created_at": node.created_at,
    }


def run_view(follower: RunFollower) -> dict[str, Any]:
    """Where the run stands: phase, budget and progress, the best node so far."""
    data = follower.data()
    record, settings = data.record, data.settings
    counts: dict[str, int] = {}
    for node in data.nodes:
        counts[str(node.stage)] = counts.get(str(node.stage), 0) + 1
    best = data.best
    initial = data.initial if data.initial is not None and data.initial.score is not None else None
    return {
        "id": record.id,
        "task": record.task,
        "phase": str(record.phase),
        "dead": dead_reason(record),
        "message": record.message,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "metric": data.metric,
        "direction": data.direction,
        "sampler": settings.sampler.kind if settings.sampler else None,
        "features": [axis.name for axis in settings.features],
        "budget": _budget(record),
        "candidates": len(data.nodes),
        "by_stage": counts,
        "islands": len({n.island for n in data.nodes}),
        "best": None if best is None else {"id": best.id, "seq": best.seq, "score": finite(best.score)},
        "best_metric": finite(metric_value(data, best)) if best else None,
        "initial_metric": finite(metric_value(data, initial)) if initial else None,
        "llm_cost_usd": llm_cost(data),
        "seconds": run_seconds(data) if data.nodes else max(0.0, record.updated_at - record.created_at),
        "stage_colours": {str(stage): colour for stage, colour in STAGE_COLOURS.items()},
        "version": follower.version,
    }


def poll_view(follower: RunFollower, since: int) -> dict[str, Any]:
    """The run's state, and the nodes new or changed after version `since` (0: all of them)."""
    return {
        "version": follower.version,
        "run": run_view(follower),
        "nodes": [node_row(n) for n in follower.changed_since(since)],
    }


def tree_view(follower: RunFollower) -> dict[str, Any]:
    return follower.memo("tree", lambda: {"version": follower.version, **tree_json(follower.data())})


def charts_view(follower: RunFollower) -> dict[str, Any]:
    """The report's SVG charts of the run as it is now (the text in them is escaped where it is drawn)."""
    return follower.memo("charts", lambda: _charts(follower))


def _charts(follower: RunFollower) -> dict[str, Any]:
    data = follower.data()
    settings = data.settings
    grids = elite_grids(data)
    if grids is not None:
        grid_note = ""
    elif settings.sampler is None:
        grid_note = "The run's sampler is not known here (its task folder cannot be read from this machine)."
    elif settings.sampler.kind != "map_elites":
        grid_note = f"The run samples with {settings.sampler.kind}, which keeps no MAP-Elites grid."
    else:
        grid_note = "The grid's feature axes come from the task, whose folder cannot be read from here."
    return {
        "version": follower.version,
        "outcomes": outcome_bar(data) if data.nodes else "",
        "score": score_plot(data),
        "grid": elites_grid(data, grids) if grids else None,
        "grid_note": grid_note,
    }


def node_view(follower: RunFollower, node: Node) -> dict[str, Any]:
    """Everything about one node: its whole record (full code, diff, transcript, timings, log tail), its
    insight, what was retrieved into its prompt, and its relatives."""
    record = node.to_dict()  # without the embedding
    insight = follower.insight(node.insight_id)
    relatives = follower.nodes

    def link(node_id: str) -> dict[str, Any]:
        other = relatives.get(node_id)
        return node_row(other) if other is not None else {"id": node_id, "missing": True}

    retrieved_insights: list[dict[str, Any]] = []
    for insight_id in node.retrieved.get("insights", []):
        found = follower.insight(insight_id)
        retrieved_insights.append(
            {"id": insight_id, "text": found.text, "node_ids": found.node_ids}
            if found
            else {"id": insight_id, "text": None, "node_ids": []}
        )
    cognition_ids = node.retrieved.get("cognition", [])
    entries = follower.cognition(cognition_ids)
    analyses = []
    for relation, ids in (("parent", node.parent_ids), ("inspiration", node.inspiration_ids)):
        for node_id in ids:
            other = relatives.get(node_id)
            analysis = follower.insight(other.insight_id) if other is not None else None
            analyses.append({**link(node_id), "relation": relation, "analysis": analysis and analysis.text})
    return jsonable(
        {
            "node": record,
            "metric_value": metric_value(follower.data(), node),
            "insight": None
            if insight is None
            else {"id": insight.id, "text": insight.text, "node_ids": insight.node_ids},
            "retrieved": {
                "recorded": bool(node.retrieved),
                "insights": retrieved_insights,
                "cognition": [
                    {"id": i, "title": e.title, "source": e.source, "text": e.text}
                    if (e := entries.get(i))
                    else {"id": i, "title": None, "source": None, "text": None}
                    for i in cognition_ids
                ],
                "analyses": analyses,
            },
            "parents": [link(i) for i in node.parent_ids],
            "inspirations": [link(i) for i in node.inspiration_ids],
            "children": [node_row(n) for n in follower.children(node.id)],
            "retry_of": link(node.retry_of) if node.retry_of else None,
        }
    )
