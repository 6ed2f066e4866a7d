"""The plots of `kubevolve report`, drawn as inline SVG text in Python.

Drawing here rather than with a JavaScript or plotting library keeps the page self-contained: it needs no
network, no script library and no fonts, and opens offline or as an email attachment. The data comes
digested from data.py; this module only turns it into markup.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kubevolve.core.models import Node, Stage
from kubevolve.observe.report.data import (
    RunData,
    best_so_far,
    finite,
    metric_value,
    tree_layout,
    x_value,
)

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


def score_colour(t: float) -> str:
    """Low scores pale blue, high scores deep green (a sequential ramp)."""
    stops = [(0.0, (198, 219, 239)), (0.5, (107, 174, 214)), (1.0, (0, 109, 44))]
    t = min(1.0, max(0.0, t))
    for (t0, c0), (t1, c1) in zip(stops, stops[1:], strict=False):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(c0, c1, strict=True))
    return "#006d2c"


def score_range(data: RunData) -> tuple[float, float]:
    """The lowest and highest score of the run: the ends of the score colour ramp."""
    scores = [score for _, score in data.scored if math.isfinite(score)]
    return (min(scores), max(scores)) if scores else (0.0, 1.0)


def node_fill(node: Node, lo: float, hi: float) -> str:
    """An evaluated node shaded by its score within [lo, hi]; any other one grey."""
    if node.stage is not Stage.EVALUATED or node.score is None:
        return FAILED
    if not math.isfinite(node.score):
        return score_colour(1.0 if node.score > 0 else 0.0)
    return score_colour(0.5 if hi == lo else (node.score - lo) / (hi - lo))


# ---- plots ---------------------------------------------------------------------------------------------
def score_plot(data: RunData, width: int = 1100, height: int = 340) -> str:
    evaluated = data.evaluated
    if not evaluated:
        return '<p class="empty">No candidate has a score yet.</p>'
    frame = Frame(width, height, bottom=52)
    xs = [float(n.seq) for n in data.nodes]
    ys = [score for _, score in data.scored]
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
    records = best_so_far(data)
    steps: list[str] = []
    for i, (seq, best) in enumerate(records):
        if i:  # a step: level with the previous best up to this candidate, then up
            steps.append(f"L{x(seq):.1f},{y(records[i - 1][1]):.1f}")
        steps.append(f"{'M' if not steps else 'L'}{x(seq):.1f},{y(best):.1f}")
    last = records[-1][1] if records else -math.inf
    steps.append(f"L{x(max(xs)):.1f},{y(last):.1f}")
    body.append(f'<path class="best-line" d="{"".join(steps)}" stroke="{ACCENT}"/>')
    for n, score in data.scored:
        body.append(_dot(n, x(n.seq), y(score), 3.2, PALETTE[n.island % len(PALETTE)]))
    if data.best is not None and data.best.score is not None:
        body.append(
            f'<circle class="best-ring" cx="{x(data.best.seq):.1f}" cy="{y(data.best.score):.1f}" r="7"'
            f' stroke="{ACCENT}"/>'
        )
    return svg(width, height, "".join(body), "score over time", "plot score-plot")


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
    lo, hi = score_range(data)
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
            dots.append(_dot(node, px(depth), py(row), radius, node_fill(node, lo, hi)))
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


def tree_json(data: RunData) -> dict[str, Any]:
    """The lineage tree as data, for a page that draws and zooms it itself: the same layout and colours as
    `lineage_tree`, one entry per node in columns (compact for thousands of nodes). `parent` is the index of
    the first parent, -1 for a root; `hidden` counts the failed leaves left out of very large trees."""
    pos, rows = tree_layout(data)
    ids = list(pos)
    index = {node_id: i for i, node_id in enumerate(ids)}
    nodes = [data.by_id[i] for i in ids]
    lo, hi = score_range(data)
    return {
        "rows": rows,
        "depth": max((d for d, _ in pos.values()), default=0),
        "id": ids,
        "x": [pos[i][0] for i in ids],
        "y": [pos[i][1] for i in ids],
        "parent": [index.get(n.parent_ids[0], -1) if n.parent_ids else -1 for n in nodes],
        "seq": [n.seq for n in nodes],
        "stage": [str(n.stage) for n in nodes],
        "score": [finite(n.score) for n in nodes],
        "island": [n.island for n in nodes],
        "fill": [node_fill(n, lo, hi) for n in nodes],
        "best_path": [n.id for n in data.best_path() if n.id in index],
        "hidden": len(data.nodes) - len(ids),
        "colours": {
            "islands": PALETTE,
            "stages": {str(stage): colour for stage, colour in STAGE_COLOURS.items()},
            "accent": ACCENT,
        },
    }


def elites_grid(data: RunData, grids: list[dict[tuple[int, ...], Node]], width: int = 1100) -> str:
    """Each island's MAP-Elites grid: a cell per bin of the first two feature axes, shaded by the score of
    the elite it holds, from the lowest elite's to the highest's (with more axes, a cell shows the best
    elite over the others)."""
    axes = data.settings.features[:2]
    cols = min(4, len(grids)) or 1
    cell_w = width // cols
    left, right, top, bottom = 44, 10, 24, 34
    inner_w = cell_w - left - right
    bins_x = axes[0].bins
    bins_y = axes[1].bins if len(axes) > 1 else 1
    size = max(4.0, min(inner_w / bins_x, 40.0 if bins_y > 1 else 30.0))
    inner_h = size * bins_y
    cell_h = int(top + inner_h + bottom)
    scores = [
        n.score for grid in grids for n in grid.values() if n.score is not None and math.isfinite(n.score)
    ]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    panels = []
    for i, grid in enumerate(grids):
        best: dict[tuple[int, int], Node] = {}
        for cell, node in grid.items():
            key = (cell[0], cell[1] if len(cell) > 1 else 0)
            if key not in best or node.ranked_score() > best[key].ranked_score():
                best[key] = node
        body = [
            f'<text class="panel-title" x="{left}" y="15">island {i} · {len(grid)} of '
            f"{math.prod(a.bins for a in data.settings.features)} cells</text>",
            f'<rect class="plot-bg" x="{left}" y="{top}" width="{size * bins_x:.1f}" height="{inner_h:.1f}"/>',
            '<path class="grid" d="'
            + "".join(f"M{left + k * size:.1f},{top}v{inner_h:.1f}" for k in range(1, bins_x))
            + "".join(f"M{left},{top + k * size:.1f}h{size * bins_x:.1f}" for k in range(1, bins_y))
            + '"/>',
        ]
        for (cx, cy), node in sorted(best.items()):
            x, y = left + cx * size, top + (bins_y - 1 - cy) * size  # higher bins of the 2nd axis on top
            tip = f"#{node.seq} score {fmt(node.score)} · cell {cx}" + (f", {cy}" if bins_y > 1 else "")
            body.append(
                f'<rect class="cell node" data-id="{esc(node.id)}" x="{x:.1f}" y="{y:.1f}" width="{size:.1f}"'
                f' height="{size:.1f}" fill="{node_fill(node, lo, hi)}"><title>{esc(tip)}</title></rect>'
            )
        base = top + inner_h
        body.append(
            f'<text class="tick" x="{left}" y="{base + 14:.0f}">{esc(fmt(axes[0].min, 4))}</text>'
            f'<text class="tick" x="{left + size * bins_x:.1f}" y="{base + 14:.0f}" text-anchor="end">'
            f"{esc(fmt(axes[0].max, 4))}</text>"
            f'<text class="axis-label" x="{left + size * bins_x / 2:.1f}" y="{base + 28:.0f}"'
            f' text-anchor="middle">{esc(axes[0].name)}</text>'
        )
        if bins_y > 1:
            body.append(
                f'<text class="tick" x="{left - 4}" y="{base:.0f}" text-anchor="end">{esc(fmt(axes[1].min, 4))}</text>'
                f'<text class="tick" x="{left - 4}" y="{top + 9}" text-anchor="end">{esc(fmt(axes[1].max, 4))}</text>'
                f'<text class="axis-label" transform="translate({left - 8} {top + inner_h / 2:.0f}) rotate(-90)"'
                f' text-anchor="middle">{esc(axes[1].name)}</text>'
            )
        col, row = i % cols, i // cols
        panels.append(f'<g transform="translate({col * cell_w} {row * cell_h})">{"".join(body)}</g>')
    rows = math.ceil(len(grids) / cols)
    return svg(width, rows * cell_h, "".join(panels), "MAP-Elites grid per island", "plot grid-plot")


def island_scatter(data: RunData, xmetric: str, width: int = 1100) -> str:
    evaluated = data.evaluated
    islands = sorted({n.island for n in evaluated})
    if not islands:
        return '<p class="empty">No candidate has a score yet.</p>'
    cols = min(4, len(islands))
    cell_w = width // cols
    cell_h = 250
    points: list[tuple[Node, float, float]] = []
    for n in evaluated:
        xv, yv = x_value(n, xmetric), metric_value(data, n)
        if xv is not None and yv is not None:
            points.append((n, xv, yv))
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
            bx, by = x_value(data.best, xmetric), metric_value(data, data.best)
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
