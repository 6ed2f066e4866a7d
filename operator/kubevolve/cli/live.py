"""The live progress display of `kubevolve run`: a rich panel on a terminal, plain lines otherwise."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from kubevolve.core.models import Node, Stage
from kubevolve.observe.progress import RunProgress


def _fmt(score: float | None) -> str:
    return "—" if score is None else f"{score:.6g}"


def render(progress: RunProgress, last: list[str]) -> Panel:
    summary = Table.grid(padding=(0, 2))
    summary.add_row("candidates", str(progress.candidates), "best score", _fmt(progress.best_score))
    summary.add_row(
        "rate", f"{progress.rate_per_minute:.1f}/min", "initial score", _fmt(progress.initial_score)
    )
    summary.add_row(
        "evaluator occupancy", f"{100 * progress.occupancy:.0f}%", "best node", progress.best_node or "—"
    )
    outcomes = Table("outcome", "count", box=None, padding=(0, 2))
    for stage in Stage:
        if progress.by_stage.get(stage):
            outcomes.add_row(str(stage), str(progress.by_stage[stage]))
    failures = Table("failure reason", "count", box=None, padding=(0, 2))
    for (stage, kind), count in progress.failures.most_common(6):
        failures.add_row(f"{stage}: {kind.words}", str(count))
    parts = [summary, outcomes] + ([failures] if progress.failures else []) + ["\n".join(last[-6:])]
    title = f"kubevolve run {progress.run_id} · sandbox: {progress.sandbox or '…'}"
    return Panel(Group(*parts), title=title, subtitle=progress.message or None)


class ProgressDisplay:
    """Callable handed to Evolution as `on_progress`."""

    def __init__(self, console: Console):
        self.console = console
        self.last: list[str] = []
        self.live: Live | None = None
        self._plain_at = 0.0

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def __call__(self, progress: RunProgress, node: Node | None) -> None:
        if node is not None:
            line = f"#{node.seq:<5} {node.stage:<17} score={_fmt(node.score):<10} {node.error[:70]}"
            if node.id == progress.best_node:
                line = f"{line} ★ new best"
            self.last.append(line)
            del self.last[:-50]
        if self.live:
            self.live.update(render(progress, self.last))
            return
        now = time.monotonic()
        if node is None or now - self._plain_at >= 2.0 or node.id == progress.best_node:
            self._plain_at = now
            fails = sum(progress.failures.values())
            self.console.print(
                f"[{progress.run_id}] candidates={progress.candidates} best={_fmt(progress.best_score)} "
                f"rate={progress.rate_per_minute:.1f}/min failures={fails} occupancy={100 * progress.occupancy:.0f}%"
                + (f" · {progress.message}" if progress.message else ""),
                highlight=False,
            )
