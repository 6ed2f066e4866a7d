"""What a run has done so far, in numbers a person or a dashboard wants: the progress display's model."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage


def failure_kind(node: Node) -> FailureKind:
    """Why a node that did not get a score failed, as recorded where it happened; UNKNOWN if nothing was."""
    return node.failure or FailureKind.UNKNOWN


@dataclass
class RunProgress:
    run_id: str
    started: float = field(default_factory=time.monotonic)
    by_stage: Counter[Stage] = field(default_factory=Counter)
    failures: Counter[tuple[Stage, FailureKind]] = field(default_factory=Counter)  # (outcome, kind) -> count
    best_score: float | None = None
    best_node: str | None = None
    initial_score: float | None = None
    session_candidates: int = 0  # committed by this process (rates are per process)
    occupancy: float = 0.0
    sandbox: str = ""
    message: str = ""
    phase: str = ""  # the run's final phase (a RunPhase), once it has ended

    @property
    def candidates(self) -> int:
        return sum(self.by_stage.values())

    @property
    def rate_per_minute(self) -> float:
        elapsed = time.monotonic() - self.started
        return 60.0 * self.session_candidates / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self, max_candidates: int | None) -> float | None:
        """Seconds until `max_candidates` are committed at this process's rate so far; None without a limit or
        before this process has committed anything (a resumed run's earlier candidates set no rate)."""
        elapsed = time.monotonic() - self.started
        if max_candidates is None or self.session_candidates == 0 or elapsed <= 0:
            return None
        return max(0, max_candidates - self.candidates) * elapsed / self.session_candidates

    def record(self, node: Node, *, live: bool = True) -> bool:
        """Count a committed node; return True if it is a new best."""
        self.by_stage[node.stage] += 1
        if live:
            self.session_candidates += 1
        if node.stage not in (Stage.EVALUATED, Stage.PROPOSED):
            self.failures[node.stage, failure_kind(node)] += 1
            return False
        if node.stage is Stage.EVALUATED and node.score is not None:
            if not node.parent_ids and self.initial_score is None:
                self.initial_score = node.score
            if self.best_score is None or node.score > self.best_score:
                self.best_score, self.best_node = node.score, node.id
                return True
        return False


class RunObserver(Protocol):
    """What watches a local run (the progress display, the metrics recorder): called with each node the run
    stores, as it is stored, and once more with None when the run ends (`progress.phase` is then set)."""

    def __call__(self, progress: RunProgress, node: Node | None, /) -> None: ...
