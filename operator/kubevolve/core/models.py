"""The data model every part of the engine shares: nodes, insights, cognition entries and run records.

These are plain dataclasses, not pydantic models: the store builds hundreds of thousands of them and the
samplers touch them on every candidate, so they must be cheap. Validation happens at the edges (RunSpec,
task.yaml, evaluator output), never here.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from kubevolve.core.kinds import FailureKind

# The parts of an analysis, in the order a person (and a prompt) reads them.
ANALYSIS_FIELDS = ("changed", "effect", "cause", "next")
ANALYSIS_LABELS = {
    "changed": "What changed",
    "effect": "Observed effect",
    "cause": "Likely cause",
    "next": "What to try next",
}


def analysis_text(analysis: dict[str, str], sep: str = "\n") -> str:
    """An analysis as text: a labelled part per field that is not empty, one a line (how prompts show a
    parent's or an inspiration's analysis), or joined by `sep` (an insight's text is one line; there each part
    ends a sentence)."""
    parts = []
    for name in ANALYSIS_FIELDS:
        text = analysis.get(name, "").strip()
        if text:
            if sep != "\n" and not text.endswith((".", "!", "?")):
                text += "."
            parts.append(f"{ANALYSIS_LABELS[name]}: {text}")
    return sep.join(parts)


class Stage(StrEnum):
    """How far a candidate got. Every node ends in exactly one of these."""

    PROPOSED = "proposed"  # written by a proposal step, not evaluated yet (the Kubernetes runtime uses this)
    REJECTED_STATIC = (
        "rejected_static"  # did not parse, touched code outside the EVOLVE-BLOCK, failed a task check
    )
    REJECTED_NOVELTY = "rejected_novelty"  # duplicate or near-duplicate of an earlier node
    FAILED_QUICK = "failed_quick"  # crashed, timed out or fell below a threshold in the quick stage
    FAILED_FULL = "failed_full"  # crashed or timed out in the full stage
    EVALUATED = "evaluated"  # has a score

    @property
    def is_final(self) -> bool:
        return self is not Stage.PROPOSED


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def code_hash(code: str) -> str:
    """Hash of a program with trailing whitespace normalised, for the exact-duplicate check."""
    normalised = "\n".join(line.rstrip() for line in code.strip().splitlines())
    return hashlib.sha256(normalised.encode()).hexdigest()[:32]


@dataclass
class Node:
    """One candidate program and everything learned about it.

    `score` is always "higher is better": the task's primary metric, negated when the task minimises it, so
    samplers and stores never need to know the direction. The raw metric stays in `metrics`.
    """

    run_id: str
    code: str
    id: str = field(default_factory=new_id)
    seq: int = -1  # per-run insertion order, assigned by the store
    parent_ids: list[str] = field(default_factory=list)
    inspiration_ids: list[str] = field(default_factory=list)
    island: int = 0
    generation: int = 0
    motivation: str = ""
    diff: str = ""
    # the program's canonical form, hashed (loop/engineer/canonical.py): the same experiment, however written
    canonical_hash: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    stage: Stage = Stage.PROPOSED
    error: str = ""  # one line: why it failed or was rejected, for a person
    failure: FailureKind | None = None  # the same as a kind, for machines; None unless it failed
    log_tail: str = ""  # the last lines of the evaluator's output
    artifacts: dict[str, str] = field(default_factory=dict)  # text the evaluator returned for the Researcher
    insight_id: str | None = None
    # the Analyzer's reading of this experiment: the ANALYSIS_FIELDS it gave, and "analyzer" (who wrote it);
    # shown when the node is a later proposal's parent or inspiration. {} until analysed
    analysis: dict[str, str] = field(default_factory=dict)
    # the LLM judge's verdict before evaluation ({"verdict": pass|reject|malformed|unavailable, "reason"}); {}: none
    judge: dict[str, str] = field(default_factory=dict)
    proposer: str = ""
    retry_of: str | None = None  # the failed attempt this debug retry repairs
    attempt: int = 0  # 0 for a fresh proposal, k for the k-th debug retry
    transcript: list[dict[str, Any]] = field(default_factory=list)  # every prompt and completion, in order
    # ids of what retrieval put into the proposal's prompt: {"insights": [...], "cognition": [...]}
    retrieved: dict[str, list[str]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step: propose, static, quick, full
    llm: dict[str, float] = field(default_factory=dict)  # prompt_tokens, completion_tokens, cost_usd
    embedding: list[float] | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def code_hash(self) -> str:
        return code_hash(self.code)

    def ranked_score(self) -> float:
        """The score of a node that samplers and charts rank, where only scored nodes may be: raises naming the
        node when it has none, instead of comparing with None somewhere later."""
        if self.score is None:
            raise ValueError(f"node {self.id} has no score to rank (stage {self.stage.value})")
        return self.score

    def fail(self, stage: Stage, failure: FailureKind, error: str) -> Node:
        """Settle the node as failed or rejected at `stage`: the kind for machines, the message for people."""
        self.stage, self.failure, self.error = stage, failure, error
        return self

    def to_dict(self, *, with_embedding: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data["stage"] = str(self.stage)
        data["failure"] = None if self.failure is None else str(self.failure)
        if not with_embedding:
            data.pop("embedding")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["stage"] = Stage(kwargs.get("stage", Stage.PROPOSED))
        kwargs["failure"] = _read_failure(kwargs.get("failure"))
        return cls(**kwargs)


def _read_failure(value: str | None) -> FailureKind | None:
    """A stored kind. One this kubevolve does not know (a newer one wrote it) reads as UNKNOWN, not an error."""
    if value is None:
        return None
    try:
        return FailureKind(value)
    except ValueError:
        return FailureKind.UNKNOWN


@dataclass
class Insight:
    """A lesson the Analyzer distilled from one or several nodes, retrieved into later prompts."""

    run_id: str
    text: str
    id: str = field(default_factory=new_id)
    node_ids: list[str] = field(default_factory=list)
    embedding: list[float] | None = None
    created_at: float = field(default_factory=time.time)


@dataclass
class CognitionEntry:
    """A human prior (a paper's idea, a known trick) that retrieval injects into the Researcher's prompt.

    `collection` groups entries, usually by task name, so several tasks share one store.
    """

    collection: str
    title: str
    text: str
    source: str
    id: str = field(default_factory=new_id)
    tags: list[str] = field(default_factory=list)
    embedding: list[float] | None = None
    created_at: float = field(default_factory=time.time)


class RunPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"  # interrupted locally; `kubevolve run` resumes it


@dataclass
class RunOwner:
    """The process running a local run, and when it last said so (`runtime/owner.py` writes it,
    `core/liveness.py` judges it): a run killed with `kill -9` cannot record that it stopped, so readers tell
    it from this."""

    host: str
    pid: int
    process_started_at: float | None  # when that process started (epoch seconds): tells a reused pid apart
    heartbeat_at: float  # renewed every few seconds while the run goes


@dataclass
class RunRecord:
    """A run: its name, the spec it was started with (RunSpec as a dict) and where it stands."""

    id: str
    task: str
    spec: dict[str, Any]
    phase: RunPhase = RunPhase.PENDING
    message: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    # the task as the image running the steps sees it (`Task.summary`): written by the steps, read by the operator
    task_facts: dict[str, Any] = field(default_factory=dict)
    # the local process running it; None on a cluster, where the operator writes the record
    owner: RunOwner | None = None
