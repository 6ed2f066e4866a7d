"""The live progress display of `kubevolve run`: a rich panel on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from kubevolve.core.models import Node, Stage
from kubevolve.observe.progress import RunProgress


def _fmt(score: float | None) -> str:
    return "—" if score is None else f"{score:.6g}"


def _duration(seconds: float | None) -> str:
    """'1h 04m', '4m 10s', '35s'; '—' when unknown."""
    if seconds is None:
        return "—"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _headline(message: str) -> str:
    """A run's message on one line (an evaluator's import error adds its traceback below the first)."""
    return message.strip().splitlines()[0] if message.strip() else ""


def candidates_text(progress: RunProgress, max_candidates: int | None) -> str:
    return str(progress.candidates) + ("" if max_candidates is None else f" of {max_candidates}")


def render(progress: RunProgress, last: list[str], max_candidates: int | None = None) -> Panel:
    summary = Table.grid(padding=(0, 2))
    summary.add_row(
        "candidates", candidates_text(progress, max_candidates), "best score", _fmt(progress.best_score)
    )
    summary.add_row(
        "rate", f"{progress.rate_per_minute:.1f}/min", "initial score", _fmt(progress.initial_score)
    )
    summary.add_row(
        "ETA", _duration(progress.eta_seconds(max_candidates)), "best node", progress.best_node or "—"
    )
    summary.add_row("evaluator occupancy", f"{100 * progress.occupancy:.0f}%", "", "")
    outcomes = Table("outcome", "count", box=None, padding=(0, 2))
    for stage in Stage:
        if progress.by_stage.get(stage):
            outcomes.add_row(str(stage), str(progress.by_stage[stage]))
    failures = Table("failure reason", "count", box=None, padding=(0, 2))
    for (stage, kind), count in progress.failures.most_common(6):
        failures.add_row(f"{stage}: {kind.words}", str(count))
    parts = [summary, outcomes] + ([failures] if progress.failures else []) + ["\n".join(last[-6:])]
    title = f"kubevolve run {progress.run_id} · sandbox: {progress.sandbox or '…'}"
    return Panel(Group(*parts), title=title, subtitle=escape(_headline(progress.message)) or None)


class ProgressDisplay:
    """The live display of a local run: one of its observers (`RunObserver`). `max_candidates` (the run's
    budget) gives the panel its 'N of M' and the ETA at this session's rate."""

    def __init__(self, console: Console, max_candidates: int | None = None):
        self.console = console
        self.max_candidates = max_candidates
        self.last: list[str] = []
        self.live: Live | None = None
        self._plain_at = 0.0

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def __call__(self, progress: RunProgress, node: Node | None) -> None:
        if node is not None:
            line = f"#{node.seq:<5} {node.stage:<17} score={_fmt(node.score):<10} {escape(_headline(node.error)[:70])}"
            if node.id == progress.best_node:
                line = f"{line} ★ new best"
            self.last.append(line)
            del self.last[:-50]
        if self.live:
            self.live.update(render(progress, self.last, self.max_candidates))
            return
        now = time.monotonic()
        if node is None or now - self._plain_at >= 2.0 or node.id == progress.best_node:
            self._plain_at = now
            fails = sum(progress.failures.values())
            self.console.print(
                f"[{progress.run_id}] candidates={candidates_text(progress, self.max_candidates)} "
                f"best={_fmt(progress.best_score)} rate={progress.rate_per_minute:.1f}/min "
                f"eta={_duration(progress.eta_seconds(self.max_candidates))} failures={fails} "
                f"occupancy={100 * progress.occupancy:.0f}%"
                + (f" · {_headline(progress.message)}" if progress.message else ""),
                highlight=False,
                markup=False,
                soft_wrap=True,  # a log line per update, never broken in two
            )
