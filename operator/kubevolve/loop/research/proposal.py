"""The proposer interface: turn parents and inspirations into a new candidate program.

Two implementations: the offline proposer (program-search operators, no LLM; the embedded default) and the
LLM Researcher. Both return the *whole* new program; the engine computes the diff and the Engineer checks that
only the EVOLVE-BLOCK changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import CognitionEntry, Insight, Node
from kubevolve.core.task import Task
from kubevolve.errors import KubevolveError


class ProposalError(KubevolveError, RuntimeError):
    """The proposer could not produce a usable program (e.g. malformed LLM output). Recorded on a node,
    with what the attempt cost and its transcript, so a failed LLM answer is still visible and paid for.
    `kind` says which way it failed: the LLM call, its answer, or a proposer that found nothing to change."""

    kind = FailureKind.PROPOSAL_FAILED

    def __init__(
        self,
        message: str,
        *,
        llm: dict[str, float] | None = None,
        transcript: list[dict[str, Any]] | None = None,
        kind: FailureKind | None = None,
    ):
        super().__init__(message)
        self.llm = llm or {}
        self.transcript = transcript or []
        if kind is not None:
            self.kind = kind


@dataclass
class ProposalRequest:
    task: Task
    parents: list[Node]  # parents[0] is the program the candidate is derived from
    inspirations: list[Node]
    seed: int  # deterministic per candidate: same run seed and history give the same proposals
    insights: list[Insight] = field(default_factory=list)  # retrieved lessons from earlier experiments
    cognition: list[CognitionEntry] = field(default_factory=list)  # retrieved human priors
    analyses: dict[str, str] = field(
        default_factory=dict
    )  # node id -> its insight, for parents and inspirations
    feedback: str = ""  # an earlier attempt's error, for a debug retry


@dataclass
class Proposal:
    code: str
    motivation: str
    proposer: str
    llm: dict[str, float] = field(default_factory=dict)  # prompt_tokens, completion_tokens, cost_usd
    transcript: list[dict[str, Any]] = field(
        default_factory=list
    )  # prompts and completions, for `show --prompts`


class Proposer(Protocol):
    name: str
    accepts_feedback: bool  # True: a debug retry with the error can fix a failed attempt (an LLM can)

    async def propose(self, request: ProposalRequest) -> Proposal: ...
