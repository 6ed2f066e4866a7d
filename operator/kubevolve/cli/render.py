"""How runs and nodes look on a terminal and as JSON."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

from kubevolve.api import RunResult
from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
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
    }


def failure_summary(nodes: Iterable[Node]) -> dict[str, int]:
    """How many candidates failed each way, most frequent first: {kind value: count}."""
    counts = Counter(str(failure_kind(n)) for n in nodes if n.stage not in (Stage.EVALUATED, Stage.PROPOSED))
    return dict(counts.most_common())


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _age(ts: float) -> str:
    seconds = int(time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def runs_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("run", "task", "phase", "best", "candidates", "age", "message")
    for r in rows:
        best = "—" if r["best_score"] is None else f"{r['best_score']:.6g}"
        table.add_row(
            r["id"], r["task"], r["phase"], best, str(r["candidates"]), _age(r["created_at"]), r["message"]
        )
    return table


def print_run(console: Console, summary: dict[str, Any]) -> None:
    console.print(f"[bold]{summary['id']}[/] ({summary['task']}): {summary['phase']}  {summary['message']}")
    best = summary["best_score"]
    console.print(f"  best score: {'—' if best is None else f'{best:.6g}'}  (node {summary['best_node']})")
    console.print(f"  candidates: {summary['candidates']}")
    for stage, count in summary["by_stage"].items():
        console.print(f"    {stage:<18} {count}")
    if summary.get("failures"):
        console.print("  failures:")
        for kind, count in summary["failures"].items():
            console.print(f"    {FailureKind(kind).words:<18} {count}")


def print_node(console: Console, node: Node, *, code: bool = True, diff: bool = True) -> None:
    console.print(
        f"[bold]node {node.id}[/] (#{node.seq}, run {node.run_id}, generation {node.generation}, "
        f"island {node.island})"
    )
    console.print(f"  stage: {node.stage}   score: {node.score}")
    if node.parent_ids:
        console.print(
            f"  parents: {', '.join(node.parent_ids)}   inspirations: {', '.join(node.inspiration_ids) or '—'}"
        )
    if node.motivation:
        console.print(f"  motivation: {node.motivation}")
    if node.metrics:
        console.print("  metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in node.metrics.items()))
    if node.timings:
        console.print("  timings: " + ", ".join(f"{k}={v * 1000:.0f}ms" for k, v in node.timings.items()))
    if node.error:
        kind = f" ({node.failure.words})" if node.failure else ""
        console.print(f"  [red]error{kind}:[/] {node.error}")
    for name, text in node.artifacts.items():
        console.print(f"  artifact {name}:\n{text}")
    if node.log_tail and node.stage is not Stage.EVALUATED:
        console.print("  log tail:")
        console.print(node.log_tail, markup=False, highlight=False)
    if diff and node.diff:
        console.print(Syntax(node.diff, "diff", theme="ansi_dark"))
    if code:
        console.print(Syntax(node.code, "python", theme="ansi_dark", line_numbers=True))


def print_transcript(console: Console, node: Node) -> None:
    """Every prompt and completion stored with the node, in order."""
    if not node.transcript:
        console.print("  (no prompts: this node was not proposed or analysed by an LLM)")
        return
    for number, entry in enumerate(node.transcript, start=1):
        console.rule(
            f"{number}. {entry.get('purpose', '?')} · {entry.get('model', '?')} · "
            f"{entry.get('prompt_tokens', 0)}+{entry.get('completion_tokens', 0)} tokens · "
            f"${entry.get('cost_usd', 0.0):.4f} · {entry.get('seconds', 0)}s"
        )
        for message in entry.get("messages", []):
            console.print(f"[bold]{message['role']}:[/]")
            console.print(message["content"], markup=False, highlight=False)
        console.print("[bold]completion:[/]")
        console.print(entry.get("completion", ""), markup=False, highlight=False)


def lineage_tree(chain: list[Node]) -> Tree:
    """Root first: the initial program down to the node asked about."""
    root = tree = Tree(_lineage_label(chain[0]))
    for node in chain[1:]:
        tree = tree.add(_lineage_label(node))
    return root


def _lineage_label(node: Node) -> str:
    score = "—" if node.score is None else f"{node.score:.6g}"
    why = (node.motivation or "")[:90]
    return f"{node.id} #{node.seq} gen {node.generation} [{node.stage}] score {score}  {why}"
