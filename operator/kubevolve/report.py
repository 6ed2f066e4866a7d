"""`kubevolve report`: one run as a self-contained HTML page, readable offline and attachable to an email.

Every plot is inline SVG drawn here in Python, so the page needs no network, no JavaScript library and no
fonts; a few lines of inline JavaScript add node details on click and switch the scatter plots' x metric.
The page shows: a summary, score over time with the best-so-far line, the lineage tree with the path from the
initial program to the best highlighted, a metric scatter per island, the best program and its diff from the
initial program, and failures by reason.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .models import Node, RunRecord, Stage
from .progress import failure_reason
from .store.base import Store

# Tableau 10: distinguishable categorical colours for islands
PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
]
ACCENT = "#d62728"  # the best path and the best-so-far line
FAILED = "#c7c7c7"
STAGE_COLOURS = {
    Stage.EVALUATED: "#59a14f",
    Stage.REJECTED_STATIC: "#edc948",
    Stage.REJECTED_NOVELTY: "#bab0ac",
    Stage.FAILED_QUICK: "#f28e2b",
    Stage.FAILED_FULL: "#e15759",
    Stage.PROPOSED: "#76b7b2",
}
MAX_TREE_NODES = 5000  # above this, failed leaves are left out of the tree (they are still counted)
MAX_SCATTER_METRICS = 8


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def fmt(value: float | None, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}g}"


# ---- scales and axes -----------------------------------------------------------------------------------
def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


@dataclass
class Scale:
    lo: float
    hi: float
    a: float  # pixel of lo
    b: float  # pixel of hi

    @classmethod
    def fit(cls, values: list[float], a: float, b: float, pad: float = 0.04) -> Scale:
        finite = [v for v in values if math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        if hi == lo:
            lo, hi = lo - (abs(lo) or 1) * 0.5, hi + (abs(hi) or 1) * 0.5
        span = hi - lo
        return cls(lo - pad * span, hi + pad * span, a, b)

    def __call__(self, value: float) -> float:
        return self.a + (value - self.lo) / (self.hi - self.lo) * (self.b - self.a)


@dataclass
class Frame:
    """A plot area inside an SVG: margins, and the x and y scales."""

    width: int
    height: int
    left: int = 64
    right: int = 16
    top: int = 14
    bottom: int = 42

    def scales(self, xs: list[float], ys: list[float]) -> tuple[Scale, Scale]:
        return (
            Scale.fit(xs, self.left, self.width - self.right),
            Scale.fit(ys, self.height - self.bottom, self.top),
        )

    def axes(self, x: Scale, y: Scale, xlabel: str, ylabel: str) -> str:
        out = [
            f'<rect class="plot-bg" x="{self.left}" y="{self.top}" width="{self.width - self.left - self.right}"'
            f' height="{self.height - self.top - self.bottom}"/>'
        ]
        for t in nice_ticks(y.lo, y.hi):
            py = y(t)
            out.append(
                f'<line class="grid" x1="{self.left}" x2="{self.width - self.right}" y1="{py:.1f}" y2="{py:.1f}"/>'
                f'<text class="tick" x="{self.left - 6}" y="{py + 4:.1f}" text-anchor="end">{esc(fmt(t, 4))}</text>'
            )
        base = self.height - self.bottom
        for t in nice_ticks(x.lo, x.hi, 6):
            px = x(t)
            out.append(
                f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{self.top}" y2="{base}"/>'
                f'<text class="tick" x="{px:.1f}" y="{base + 16}" text-anchor="middle">{esc(fmt(t, 4))}</text>'
            )
        out.append(
            f'<text class="axis-label" x="{(self.left + self.width - self.right) / 2:.0f}" y="{self.height - 6}"'
            f' text-anchor="middle">{esc(xlabel)}</text>'
            f'<text class="axis-label" transform="translate(14 {(self.top + base) / 2:.0f}) rotate(-90)"'
            f' text-anchor="middle">{esc(ylabel)}</text>'
        )
        return "".join(out)


def svg(width: int, height: int, body: str, label: str, cls: str = "plot") -> str:
    return (
        f'<svg class="{cls}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"'
        f' aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _dot(node: Node, cx: float, cy: float, r: float, fill: str, extra: str = "") -> str:
    tip = f"#{node.seq} {node.stage}" + (f" score {fmt(node.score)}" if node.score is not None else "")
    return (
        f'<circle class="node{extra}" data-id="{esc(node.id)}" cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}"'
        f' fill="{fill}"><title>{esc(tip)}</title></circle>'
    )


# ---- the run, digested ---------------------------------------------------------------------------------
@dataclass
class RunData:
    record: RunRecord
    nodes: list[Node]
    by_id: dict[str, Node]
    best: Node | None
    initial: Node | None
    metric: str
    direction: str

    @property
    def evaluated(self) -> list[Node]:
        return [n for n in self.nodes if n.stage is Stage.EVALUATED and n.score is not None]

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
    nodes = list(store.iter_nodes(run_id))
    metric, direction = "score", "maximize"
    try:  # the task's metric name and direction, when its folder is at hand
        from .task import load_task

        task = load_task(record.spec.get("task", ""))
        metric, direction = task.spec.metric, task.spec.direction
    except Exception:
        pass
    initial = next((n for n in nodes if not n.parent_ids), nodes[0] if nodes else None)
    return RunData(
        record=record,
        nodes=nodes,
        by_id={n.id: n for n in nodes},
        best=store.best_node(run_id),
        initial=initial,
        metric=metric,
        direction=direction,
    )


def metric_value(data: RunData, node: Node) -> float | None:
    """The task metric as the evaluator reported it (the score un-negated when the task minimises)."""
    if data.metric in node.metrics:
        return node.metrics[data.metric]
    return node.score


# ---- plots ---------------------------------------------------------------------------------------------
def score_plot(data: RunData, width: int = 1100, height: int = 340) -> str:
    evaluated = data.evaluated
    if not evaluated:
        return '<p class="empty">No candidate has a score yet.</p>'
    frame = Frame(width, height, bottom=52)
    xs = [float(n.seq) for n in data.nodes]
    ys = [n.score for n in evaluated]
    x, y = frame.scales(xs, ys)
    body = [frame.axes(x, y, "candidate (commit order)", "score (higher is better)")]
    band = height - frame.bottom + 24  # failed candidates: ticks under the axis
    for n in data.nodes:
        if n.stage is not Stage.EVALUATED:
            colour = STAGE_COLOURS.get(n.stage, FAILED)
            body.append(
                f'<line class="fail-tick" data-id="{esc(n.id)}" x1="{x(n.seq):.1f}" x2="{x(n.seq):.1f}"'
                f' y1="{band - 4}" y2="{band + 4}" stroke="{colour}"><title>#{n.seq} {esc(n.stage)}: '
                f"{esc(n.error[:120])}</title></line>"
            )
    best, steps = -math.inf, []
    for n in sorted(evaluated, key=lambda n: n.seq):
        if n.score > best:
            if steps:
                steps.append(f"L{x(n.seq):.1f},{y(best):.1f}")
            best = n.score
            steps.append(f"{'M' if not steps else 'L'}{x(n.seq):.1f},{y(best):.1f}")
    steps.append(f"L{x(max(xs)):.1f},{y(best):.1f}")
    body.append(f'<path class="best-line" d="{"".join(steps)}" stroke="{ACCENT}"/>')
    for n in evaluated:
        body.append(_dot(n, x(n.seq), y(n.score), 3.2, PALETTE[n.island % len(PALETTE)]))
    if data.best is not None and data.best.score is not None:
        body.append(
            f'<circle class="best-ring" cx="{x(data.best.seq):.1f}" cy="{y(data.best.score):.1f}" r="7"'
            f' stroke="{ACCENT}"/>'
        )
    return svg(width, height, "".join(body), "score over time", "plot score-plot")


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


def lineage_tree(data: RunData, width: int = 1100) -> str:
    pos, rows = tree_layout(data)
    if not pos:
        return '<p class="empty">No candidates yet.</p>'
    height = int(min(1400, max(260, rows * 6 + 40)))
    max_depth = max(d for d, _ in pos.values()) or 1
    left, right, top, bottom = 20, 20, 16, 24
    px = lambda d: left + d / max_depth * (width - left - right)  # noqa: E731
    py = lambda r: top + (r + 0.5) / max(rows, 1) * (height - top - bottom)  # noqa: E731
    path_ids = [n.id for n in data.best_path()]
    on_path = set(path_ids)
    scores = [n.score for n in data.evaluated]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    radius = max(1.6, min(4.5, (height - top - bottom) / max(rows, 1) * 0.45))
    edges, dots = [], []
    for node_id, (depth, row) in pos.items():
        node = data.by_id[node_id]
        if node.parent_ids and node.parent_ids[0] in pos and node_id not in on_path:
            pd, pr = pos[node.parent_ids[0]]
            x0, y0, x1, y1 = px(pd), py(pr), px(depth), py(row)
            xm = (x0 + x1) / 2
            edges.append(f"M{x0:.1f},{y0:.1f}C{xm:.1f},{y0:.1f} {xm:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
        if node.stage is Stage.EVALUATED and node.score is not None:
            t = 0.5 if hi == lo else (node.score - lo) / (hi - lo)
            dots.append(_dot(node, px(depth), py(row), radius, score_colour(t)))
        else:
            dots.append(_dot(node, px(depth), py(row), radius * 0.7, FAILED, " failed"))
    best_edges = []
    for a, b in zip(path_ids, path_ids[1:], strict=False):
        (d0, r0), (d1, r1) = pos[a], pos[b]
        x0, y0, x1, y1 = px(d0), py(r0), px(d1), py(r1)
        xm = (x0 + x1) / 2
        best_edges.append(f"M{x0:.1f},{y0:.1f}C{xm:.1f},{y0:.1f} {xm:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
    path_dots = [
        _dot(data.by_id[i], px(pos[i][0]), py(pos[i][1]), radius + 1.8, ACCENT, " on-path")
        for i in path_ids
        if i in pos
    ]
    body = (
        f'<path class="tree-edges" d="{" ".join(edges)}"/>'
        f'<path class="best-path" d="{" ".join(best_edges)}" stroke="{ACCENT}"/>'
        + "".join(dots)
        + "".join(path_dots)
    )
    return svg(width, height, body, "lineage tree", "plot tree-plot")


def score_colour(t: float) -> str:
    """Low scores pale blue, high scores deep green (a sequential ramp)."""
    stops = [(0.0, (198, 219, 239)), (0.5, (107, 174, 214)), (1.0, (0, 109, 44))]
    t = min(1.0, max(0.0, t))
    for (t0, c0), (t1, c1) in zip(stops, stops[1:], strict=False):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(c0, c1, strict=True))
    return "#006d2c"


def scatter_metrics(data: RunData) -> list[str]:
    """x-axis choices for the island scatter: the evaluators' other metrics, then the program's length."""
    counts: Counter[str] = Counter()
    for n in data.evaluated:
        for key, value in n.metrics.items():
            if key != data.metric and isinstance(value, int | float) and math.isfinite(value):
                counts[key] += 1
    return [k for k, _ in counts.most_common(MAX_SCATTER_METRICS - 1)] + ["code length (bytes)"]


def _x_of(node: Node, metric: str) -> float | None:
    if metric == "code length (bytes)":
        return float(len(node.code.encode()))
    value = node.metrics.get(metric)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def island_scatter(data: RunData, xmetric: str, width: int = 1100) -> str:
    evaluated = data.evaluated
    islands = sorted({n.island for n in evaluated})
    if not islands:
        return '<p class="empty">No candidate has a score yet.</p>'
    cols = min(4, len(islands))
    cell_w = width // cols
    cell_h = 250
    points = [(n, _x_of(n, xmetric), metric_value(data, n)) for n in evaluated]
    points = [(n, xv, yv) for n, xv, yv in points if xv is not None and yv is not None]
    panels = []
    for i, island in enumerate(islands):
        frame = Frame(cell_w, cell_h, left=58, right=10, top=24, bottom=40)
        x, y = frame.scales([p[1] for p in points], [p[2] for p in points])
        mine = [p for p in points if p[0].island == island]
        body = [frame.axes(x, y, xmetric, data.metric)]
        body.append(
            f'<text class="panel-title" x="{frame.left}" y="15">island {island} · {len(mine)} evaluated</text>'
        )
        body += [
            f'<circle class="ghost" cx="{x(xv):.1f}" cy="{y(yv):.1f}" r="2.2"/>'
            for n, xv, yv in points
            if n.island != island
        ]
        colour = PALETTE[island % len(PALETTE)]
        body += [_dot(n, x(xv), y(yv), 3.4, colour) for n, xv, yv in mine]
        if data.best is not None and data.best.island == island:
            bx, by = _x_of(data.best, xmetric), metric_value(data, data.best)
            if bx is not None and by is not None:
                body.append(
                    f'<circle class="best-ring" cx="{x(bx):.1f}" cy="{y(by):.1f}" r="7" stroke="{ACCENT}"/>'
                )
        col, row = i % cols, i // cols
        panels.append(f'<g transform="translate({col * cell_w} {row * cell_h})">{"".join(body)}</g>')
    rows = math.ceil(len(islands) / cols)
    return svg(
        width,
        rows * cell_h,
        "".join(panels),
        f"{data.metric} against {xmetric} per island",
        "plot scatter-plot",
    )


def outcome_bar(data: RunData, width: int = 1100) -> str:
    counts = Counter(n.stage for n in data.nodes)
    total = sum(counts.values()) or 1
    x, parts, legend = 0.0, [], []
    for stage in Stage:
        if not counts.get(stage):
            continue
        w = counts[stage] / total * width
        colour = STAGE_COLOURS[stage]
        parts.append(
            f'<rect class="outcome" x="{x:.1f}" y="0" width="{w:.1f}" height="22" fill="{colour}">'
            f"<title>{esc(stage)}: {counts[stage]}</title></rect>"
        )
        legend.append(
            f'<span class="chip"><i style="background:{colour}"></i>{esc(stage)} <b>{counts[stage]}</b></span>'
        )
        x += w
    return (
        svg(width, 22, "".join(parts), "outcomes", "plot outcome-bar")
        + f'<div class="legend">{"".join(legend)}</div>'
    )


# ---- text sections -------------------------------------------------------------------------------------
def code_block(code: str) -> str:
    lines = "".join(f"<span>{esc(line)}</span>\n" for line in code.splitlines())
    return f'<pre class="code numbered">{lines}</pre>'


def diff_block(before: str, after: str, names: tuple[str, str]) -> str:
    diff = list(
        difflib.unified_diff(before.splitlines(), after.splitlines(), names[0], names[1], lineterm="", n=3)
    )
    if not diff:
        return '<p class="empty">The best program is the initial program.</p>'
    out = []
    for line in diff:
        cls = (
            "hunk"
            if line.startswith("@@")
            else "meta"
            if line.startswith(("---", "+++"))
            else "add"
            if line.startswith("+")
            else "del"
            if line.startswith("-")
            else "ctx"
        )
        out.append(f'<span class="{cls}">{esc(line)}</span>\n')
    return f'<pre class="code diff">{"".join(out)}</pre>'


def path_table(data: RunData) -> str:
    rows, previous = [], None
    for n in data.best_path():
        delta = (
            ""
            if previous is None or previous.score is None or n.score is None
            else f"{n.score - previous.score:+.4g}"
        )
        rows.append(
            f'<tr data-id="{esc(n.id)}"><td>#{n.seq}</td><td class="mono">{esc(n.id)}</td><td>{n.island}</td>'
            f"<td>{fmt(n.score)}</td><td>{delta}</td><td>{esc(n.motivation[:200] or '—')}</td></tr>"
        )
        previous = n
    return (
        '<table class="table"><thead><tr><th>seq</th><th>node</th><th>island</th><th>score</th><th>Δ</th>'
        f"<th>motivation</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def failures_table(data: RunData) -> str:
    reasons = Counter(
        (str(n.stage), failure_reason(n))
        for n in data.nodes
        if n.stage not in (Stage.EVALUATED, Stage.PROPOSED)
    )
    if not reasons:
        return '<p class="empty">No failures.</p>'
    rows = "".join(
        f"<tr><td>{esc(stage)}</td><td>{esc(reason)}</td><td>{count}</td></tr>"
        for (stage, reason), count in reasons.most_common()
    )
    return (
        '<table class="table"><thead><tr><th>outcome</th><th>reason</th><th>count</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def summary_cards(data: RunData) -> str:
    n_eval = len(data.evaluated)
    cost = sum(n.llm.get("cost_usd", 0.0) + n.llm.get("analysis_cost_usd", 0.0) for n in data.nodes)
    last = max([data.record.updated_at, *(n.created_at for n in data.nodes)])
    span = last - data.record.created_at
    best = metric_value(data, data.best) if data.best else None
    initial = metric_value(data, data.initial) if data.initial and data.initial.score is not None else None
    cards = [
        ("phase", str(data.record.phase)),
        ("candidates", str(len(data.nodes))),
        ("evaluated", f"{n_eval} ({100 * n_eval / max(1, len(data.nodes)):.0f}%)"),
        (f"best {data.metric}", fmt(best)),
        (f"initial {data.metric}", fmt(initial)),
        ("islands", str(len({n.island for n in data.nodes}) or 0)),
        ("LLM cost", f"${cost:.4f}"),
        ("duration", _duration(span)),
    ]
    return "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div></div>'
        for k, v in cards
    )


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(0.0, seconds):.1f} s"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def node_json(data: RunData) -> str:
    """What a click shows about a node, embedded once (safe inside a <script> element)."""
    table = {
        n.id: {
            "seq": n.seq,
            "stage": str(n.stage),
            "score": _finite(n.score),
            "island": n.island,
            "generation": n.generation,
            "parent": n.parent_ids[0] if n.parent_ids else None,
            "proposer": n.proposer,
            "motivation": n.motivation[:400],
            "error": n.error[:400],
            "metrics": {k: _finite(v) for k, v in list(n.metrics.items())[:12]},
        }
        for n in data.nodes
    }
    text = json.dumps(table, default=_clean, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _clean(value: Any) -> Any:
    return str(value)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a value is shown as its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# ---- the page ------------------------------------------------------------------------------------------
def render_report(data: RunData) -> str:
    template = resources.files("kubevolve").joinpath("templates/report.html").read_text()
    choices = scatter_metrics(data)
    scatters = "".join(
        f'<div class="scatter" data-metric="{esc(m)}"{"" if i == 0 else " hidden"}>{island_scatter(data, m)}</div>'
        for i, m in enumerate(choices)
    )
    options = "".join(f'<option value="{esc(m)}">{esc(m)}</option>' for m in choices)
    best = data.best
    if best is not None:
        initial_code = data.initial.code if data.initial else ""
        best_section = (
            f'<p>Node <span class="mono">{esc(best.id)}</span> (#{best.seq}, island {best.island}, generation '
            f"{best.generation}), {esc(data.metric)} = <b>{fmt(metric_value(data, best))}</b>. "
            f"{esc(best.motivation)}</p>"
            f"<h3>Diff from the initial program</h3>"
            f"{diff_block(initial_code, best.code, ('initial', f'best #{best.seq}'))}"
            f"<h3>Best program</h3>{code_block(best.code)}"
        )
    else:
        best_section = '<p class="empty">No candidate has a score yet.</p>'
    values = {
        "title": esc(f"kubevolve report · {data.record.id}"),
        "run": esc(data.record.id),
        "task": esc(data.record.task),
        "message": esc(data.record.message),
        "generated": esc(time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        "metric": esc(data.metric),
        "direction": esc(data.direction),
        "cards": summary_cards(data),
        "outcomes": outcome_bar(data),
        "score_plot": score_plot(data),
        "tree": lineage_tree(data),
        "path_table": path_table(data),
        "scatter_options": options,
        "scatters": scatters,
        "best": best_section,
        "failures": failures_table(data),
        "island_legend": "".join(
            f'<span class="chip"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>island {i}</span>'
            for i in sorted({n.island for n in data.evaluated})
        ),
        "nodes_json": node_json(data),
    }
    # one pass, so text from the run (a program containing "{{...}}") is never substituted again
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)


def write_report(store: Store, run_id: str, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(load_run(store, run_id)), encoding="utf-8")
    return out
