"""`kubevolve report`: one run as a self-contained HTML page, readable offline and attachable to an email.

Every plot is inline SVG drawn in Python, so the page needs no network, no JavaScript library and no
fonts; a few lines of inline JavaScript add node details on click and switch the scatter plots' x metric.
The page shows: a summary, score over time with the best-so-far line, the lineage tree with the path from the
initial program to the best highlighted, a metric scatter per island, the best program and its diff from the
initial program, and failures by reason.

Three modules, one job each: data.py reads the run from the store and digests it, charts.py
draws the SVG plots, and this one writes the text sections and fills the page template (report.html beside this module).
`load_run`, `render_report` and `write_report` are the entry points, all importable from here.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

from kubevolve.observe.report.charts import (
    PALETTE,
    esc,
    fmt,
    island_scatter,
    lineage_tree,
    outcome_bar,
    score_plot,
)
from kubevolve.observe.report.data import (
    RunData,
    failure_counts,
    llm_cost,
    load_run,
    metric_value,
    node_details,
    run_seconds,
    scatter_metrics,
)
from kubevolve.store.base import Store

__all__ = ["RunData", "load_run", "render_report", "write_report"]


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
    reasons = failure_counts(data)
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
    best = metric_value(data, data.best) if data.best else None
    initial = metric_value(data, data.initial) if data.initial and data.initial.score is not None else None
    cards = [
        ("phase", str(data.record.phase)),
        ("sampler", data.settings.sampler_kind or "—"),
        ("candidates", str(len(data.nodes))),
        ("evaluated", f"{n_eval} ({100 * n_eval / max(1, len(data.nodes)):.0f}%)"),
        (f"best {data.metric}", fmt(best)),
        (f"initial {data.metric}", fmt(initial)),
        ("islands", str(len({n.island for n in data.nodes}) or 0)),
        ("LLM cost", f"${llm_cost(data):.4f}"),
        ("duration", _duration(run_seconds(data))),
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
    text = json.dumps(node_details(data), default=_clean, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _clean(value: Any) -> Any:
    """Whatever else json cannot encode is shown as its text rather than failing the page."""
    return str(value)


# ---- the page ------------------------------------------------------------------------------------------
def render_report(data: RunData) -> str:
    files = resources.files(__package__)
    template = files.joinpath("report.html").read_text()
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
        "style": files.joinpath("report.css").read_text(),
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
