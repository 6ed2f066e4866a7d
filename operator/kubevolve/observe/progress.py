"""What a run has done so far, in numbers a person or a dashboard wants: the progress display's model."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from kubevolve.core.models import Node, Stage

# (pattern in the error, reason): a bounded set of labels, fit for a dashboard's "failures by reason"
_REASONS = [
    (re.compile(r"identical to"), "duplicate"),
    (re.compile(r"^syntax error"), "syntax error"),
    (re.compile(r"outside the evolve blocks|markers broken|evolve blocks, its parent"), "edited frozen code"),
    (re.compile(r"which the task forbids"), "forbidden import"),
    (re.compile(r"required top-level name"), "missing required name"),
    (re.compile(r"over the task's limit"), "program too large"),
    (re.compile(r"^proposal failed"), "proposal failed"),
    (re.compile(r"timeout:"), "timeout"),
    (re.compile(r"memory limit"), "memory limit"),
    (re.compile(r"process limit"), "process limit"),
    (re.compile(r"file size limit"), "file size limit"),
    (re.compile(r"CPU time limit"), "cpu limit"),
    (re.compile(r"wrote outside its work dir"), "wrote outside work dir"),
    (re.compile(r"tried the network"), "network"),
    (re.compile(r"bad metrics"), "bad metrics"),
    (re.compile(r"is (below|above) the threshold"), "early rejection"),
    (re.compile(r"killed by|exited with status|worker failed|sandbox setup failed"), "crashed"),
]
_EXCEPTION = re.compile(r"\b([A-Z]\w*(?:Error|Exception|Exit|Interrupt))\b")


def failure_reason(node: Node) -> str:
    """A short label for why a node failed, from a bounded set (never an id or a number)."""
    for pattern, reason in _REASONS:
        if pattern.search(node.error):
            return reason
    match = _EXCEPTION.search(node.error)
    return f"raised {match.group(1)}" if match else "other"


@dataclass
class RunProgress:
    run_id: str
    started: float = field(default_factory=time.monotonic)
    by_stage: Counter[Stage] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
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

    def record(self, node: Node, *, live: bool = True) -> bool:
        """Count a committed node; return True if it is a new best."""
        self.by_stage[node.stage] += 1
        if live:
            self.session_candidates += 1
        if node.stage not in (Stage.EVALUATED, Stage.PROPOSED):
            self.failures[f"{node.stage}: {failure_reason(node)}"] += 1
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

    def __call__(self, progress: RunProgress, node: Node | None) -> None: ...
