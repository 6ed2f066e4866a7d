"""How runs and nodes look on a terminal and as JSON."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Column, Table
from rich.text import Text

from kubevolve.api import RunResult
from kubevolve.core.kinds import FailureKind
from kubevolve.core.liveness import dead_reason
from kubevolve.core.models import CognitionEntry, Insight, Node, RunPhase, Stage
from kubevolve.observe.progress import failure_kind


def node_summary(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "seq": node.seq,
        "stage": str(node.stage),
        "score": node.score,
        "metrics": node.metrics,
        "generation": node.generation,
        "island": node.island,
        "parent_ids": node.parent_ids,
        "error": node.error,
        "failure": None if node.failure is None else str(node.failure),
    }


def run_summary(result: RunResult) -> dict[str, Any]:
    run, best = result.run, result.best
    return {
        "id": run.id,
        "task": run.task,
        "phase": str(run.phase),
        "message": run.message,
        "candidates": result.candidates,
        "by_stage": {str(k): v for k, v in result.counts.items()},
        "best_score": best.score if best else None,
        "best_node": best.id if best else None,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "owner": None if run.owner is None else dataclasses.asdict(run.owner),
        "dead": dead_reason(run),  # why a local run that says Running is not: its process is gone
    }


def failure_summary(nodes: Iterable[Node]) -> dict[str, int]:
    """How many candidates failed each way, most frequent first: {kind value: count}."""
    counts = Counter(str(failure_kind(n)) for n in nodes if n.stage not in (Stage.EVALUATED, Stage.PROPOSED))
    return dict(counts.most_common())


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _age(ts: float) -> str:
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# ---- text that must survive a copy: code, logs, ids -------------------------------------------------------
# Code, logs, motivations and errors come from an LLM or a candidate: on a terminal their control characters
# (an escape sequence can move the cursor, hide lines or retitle the window) are shown as \x1b, not obeyed.
_SHOWN_CONTROLS = {
    c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)
}


def shown(text: str) -> str:
    return text.translate(_SHOWN_CONTROLS)


def print_verbatim(console: Console, text: str) -> None:
    """Text exactly as stored. Into a pipe or a file it is written as is (no wrapping, no tab expansion, no
    markup); on a terminal it is printed unwrapped (the terminal folds long lines), control characters shown."""
    if not text:
        return
    if console.is_terminal:
        console.print(shown(text), markup=False, highlight=False, emoji=False, soft_wrap=True)
        return
    console.file.write(text if text.endswith("\n") else text + "\n")
    console.file.flush()


def print_code(console: Console, code: str, lexer: str = "python") -> None:
    """A program (or a diff): highlighted and numbered on a terminal, long lines wrapped under their number,
    never cropped; verbatim anywhere else, so `kubevolve best > f.py` or a copy from a log loses nothing."""
    if not console.is_terminal:
        print_verbatim(console, code)
        return
    numbered = lexer == "python"
    console.print(Syntax(shown(code), lexer, theme="ansi_dark", line_numbers=numbered, word_wrap=True))


def _say(console: Console, text: str) -> None:
    """A line of prose with markup (untrusted parts escaped by the caller): wrapped on a terminal, one
    unbroken line in a pipe."""
    console.print(shown(text), soft_wrap=not console.is_terminal, highlight=False)


def print_table(console: Console, table: Table) -> None:
    """A table whose cells are never cut. In a pipe it is printed at its natural width (one line per row, fit
    for grep); on a terminal too narrow for it (rich would drop or crop columns) each row becomes a block."""
    natural = console.measure(table, options=console.options.update_width(1 << 16))
    if not console.is_terminal:
        # print(width=) cannot exceed the console's own width: print through a console as wide as the table
        Console(file=console.file, width=natural.maximum, color_system=None).print(table)
    elif natural.minimum <= console.width:
        console.print(table)
    else:
        columns = table.columns
        cells = [list(column.cells) for column in columns]
        for row in range(table.row_count):
            # the key (an id) unbroken even where it is wider than the terminal: the terminal folds it
            console.print(Text(str(cells[0][row]), style="bold"), soft_wrap=True)
            fields = [(columns[i].header, str(cells[i][row])) for i in range(1, len(columns))]
            console.print(Text("  " + " · ".join(f"{k}: {v}" for k, v in fields if v), overflow="fold"))


def _cells(*values: str) -> list[Text]:
    """Table cells as plain text: a message or a motivation is never read as markup."""
    return [Text(shown(value)) for value in values]


def _folding(header: str, **kwargs: Any) -> Column:
    return Column(header, overflow="fold", **kwargs)


def _whole(header: str) -> Column:
    """A column of ids or numbers: never wrapped, never cut."""
    return Column(header, no_wrap=True, overflow="ignore")


def first_line(text: str) -> str:
    """The first line of a message, with a visible … when more follows (`status` prints all of it)."""
    lines = text.strip().splitlines()
    return "" if not lines else lines[0] + (" …" if len(lines) > 1 else "")


# ---- runs --------------------------------------------------------------------------------------------------
def phase_text(summary: dict[str, Any], *, hint: bool = True) -> str:
    """The phase, and for a local run whose process is gone, that it is dead (its record cannot say so)."""
    if not summary.get("dead"):
        return summary["phase"]
    resume = "; `kubevolve run` again resumes it" if hint else ""
    return f"{summary['phase']} (dead: {summary['dead']}{resume})"


def print_runs(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(
        _whole("run"),
        _folding("task"),
        _folding("phase", min_width=7),
        _whole("best"),
        _whole("candidates"),
        _whole("age"),
        _folding("message", min_width=12),
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        show_edge=False,
    )
    for r in rows:
        best = "—" if r["best_score"] is None else f"{r['best_score']:.6g}"
        table.add_row(
            *_cells(
                r["id"],
                r["task"],
                phase_text(r, hint=False),
                best,
                str(r["candidates"]),
                _age(r["created_at"]),
                first_line(r["message"]),
            )
        )
    print_table(console, table)


def print_run(console: Console, summary: dict[str, Any]) -> None:
    _say(
        console,
        f"[bold]{escape(summary['id'])}[/] ({escape(summary['task'])}): {escape(phase_text(summary))}",
    )
    if summary["message"]:
        _say(console, f"  message: {escape(summary['message'])}")
    owner = summary.get("owner")
    if owner and summary["phase"] == str(RunPhase.RUNNING) and not summary.get("dead"):
        where = "this host" if owner["host"] == socket.gethostname() else owner["host"]
        _say(
            console,
            f"  process: {owner['pid']} on {escape(where)}, heartbeat {_age(owner['heartbeat_at'])} ago",
        )
    if "sampler" in summary:
        _say(console, f"  sampler: {escape(summary['sampler'] or 'unknown (the task folder is not here)')}")
    best = summary["best_score"]
    if best is None:
        console.print("  best score: —  (no candidate has a score yet)")
    else:
        console.print(f"  best score: {best:.6g}  (node {summary['best_node']})")
    console.print(f"  candidates: {summary['candidates']}")
    for stage, count in summary["by_stage"].items():
        console.print(f"    {stage:<18} {count}")
    if summary.get("failures"):
        console.print("  failures:")
        for kind, count in summary["failures"].items():
            console.print(f"    {FailureKind(kind).words:<18} {count}")


# ---- nodes and insights -------------------------------------------------------------------------------------
def retrieved_items(
    node: Node, insights: Iterable[Insight], entries: Iterable[CognitionEntry]
) -> dict[str, Any]:
    """What retrieval put into the node's prompt, by id, with each item's title or text (None: no longer
    stored)."""
    by_id: dict[str, Insight] = {i.id: i for i in insights}
    cognition: dict[str, CognitionEntry] = {e.id: e for e in entries}
    return {
        "cognition": [
            {"id": i, "title": e.title, "source": e.source}
            if (e := cognition.get(i))
            else {"id": i, "title": None}
            for i in node.retrieved.get("cognition", [])
        ],
        "insights": [
            {"id": i, "text": found.text} if (found := by_id.get(i)) else {"id": i, "text": None}
            for i in node.retrieved.get("insights", [])
        ],
    }


def print_node(
    console: Console,
    node: Node,
    *,
    code: bool = True,
    diff: bool = True,
    insight: Insight | None = None,
    retrieved: dict[str, Any] | None = None,
) -> None:
    _say(
        console,
        f"[bold]node {node.id}[/] (#{node.seq}, run {escape(node.run_id)}, generation {node.generation}, "
        f"island {node.island})",
    )
    _say(console, f"  stage: {node.stage}   score: {node.score}")
    if node.parent_ids:
        _say(
            console,
            f"  parents: {', '.join(node.parent_ids)}   inspirations: {', '.join(node.inspiration_ids) or '—'}",
        )
    if node.motivation:
        _say(console, f"  motivation: {escape(node.motivation)}")
    if node.metrics:
        _say(console, "  metrics: " + ", ".join(f"{escape(k)}={v:.6g}" for k, v in node.metrics.items()))
    if node.timings:
        _say(console, "  timings: " + ", ".join(f"{k}={v * 1000:.0f}ms" for k, v in node.timings.items()))
    if node.error:
        kind = f" ({node.failure.words})" if node.failure else ""
        _say(console, f"  [red]error{kind}:[/] {escape(node.error)}")
    if node.judge:
        _say(
            console,
            f"  LLM judge: {escape(node.judge.get('verdict', '?'))}: {escape(node.judge.get('reason', ''))}",
        )
    if insight is not None:
        _say(console, f"  insight {insight.id}: {escape(insight.text)}")
    if retrieved and (retrieved["cognition"] or retrieved["insights"]):
        console.print("  retrieved into its prompt:")
        for item in retrieved["cognition"]:
            title = item["title"] or "(no longer stored)"
            _say(console, f"    cognition {item['id']}: {escape(title)}")
        for item in retrieved["insights"]:
            text = first_line(item["text"]) if item["text"] else "(no longer stored)"
            _say(console, f"    insight {item['id']}: {escape(text)}")
    for name, text in node.artifacts.items():
        _say(console, f"  artifact {escape(name)}:")
        print_verbatim(console, text)
    if node.log_tail and node.stage is not Stage.EVALUATED:
        console.print("  log tail:")
        print_verbatim(console, node.log_tail)
    if diff and node.diff:
        console.print("  diff:")
        print_code(console, node.diff, "diff")
    if code:
        console.print("  program:")
        print_code(console, node.code)


def insight_of(node: Node, insights: Iterable[Insight]) -> Insight | None:
    """The Analyzer's insight about a node: the one its `insight_id` names, else one that lists the node."""
    insights = list(insights)
    by_id = next((i for i in insights if node.insight_id and i.id == node.insight_id), None)
    return by_id or next((i for i in insights if node.id in i.node_ids), None)


def insight_summary(insight: Insight) -> dict[str, Any]:
    return {
        "id": insight.id,
        "run_id": insight.run_id,
        "node_ids": insight.node_ids,
        "text": insight.text,
        "created_at": insight.created_at,
    }


def print_insights(console: Console, insights: list[Insight]) -> None:
    """Newest first; the whole text of each, wrapped, under the nodes it is about."""
    for insight in insights:
        nodes = ", ".join(insight.node_ids) or "—"
        _say(console, f"[bold]{insight.id}[/]  node {nodes}  ({_age(insight.created_at)} ago)")
        _say(console, escape(insight.text))
        console.print()


def print_transcript(console: Console, node: Node) -> None:
    """Every prompt and completion stored with the node, in order."""
    if not node.transcript:
        console.print("  (no prompts: this node was not proposed or analysed by an LLM)")
        return
    for number, entry in enumerate(node.transcript, start=1):
        console.rule(
            escape(
                f"{number}. {entry.get('purpose', '?')} · {entry.get('model', '?')} · "
                f"{entry.get('prompt_tokens', 0)}+{entry.get('completion_tokens', 0)} tokens · "
                f"${entry.get('cost_usd', 0.0):.4f} · {entry.get('seconds', 0)}s"
            )
        )
        for message in entry.get("messages", []):
            _say(console, f"[bold]{escape(str(message['role']))}:[/]")
            print_verbatim(console, str(message["content"]))
        console.print("[bold]completion:[/]")
        print_verbatim(console, str(entry.get("completion", "")))


# ---- lineage ---------------------------------------------------------------------------------------------
MOTIVATION_CHARS = 72  # in the lineage table; `kubevolve show NODE` prints it whole


def print_lineage(console: Console, chain: list[Node]) -> None:
    """Root first, one row per node: a chain thousands long stays as wide as one row (a tree would indent
    each generation further right)."""
    table = Table(
        _whole("node"),
        _whole("seq"),
        _whole("gen"),
        _folding("stage"),
        _whole("score"),
        _folding("motivation", min_width=16),
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        show_edge=False,
    )
    for node in chain:
        score = "—" if node.score is None else f"{node.score:.6g}"
        table.add_row(
            *_cells(
                node.id,
                f"#{node.seq}",
                str(node.generation),
                str(node.stage),
                score,
                _gist(node.motivation),
            )
        )
    print_table(console, table)


def _gist(text: str) -> str:
    """The first line of a motivation, cut visibly (…) past MOTIVATION_CHARS."""
    first = first_line(text)
    return first if len(first) <= MOTIVATION_CHARS else first[: MOTIVATION_CHARS - 1].rstrip() + "…"
