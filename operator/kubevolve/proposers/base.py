"""The proposer interface: turn parents and inspirations into a new candidate program.

Two implementations: the offline proposer (program-search operators, no LLM; the embedded default) and the
LLM Researcher. Both return the *whole* new program; the engine computes the diff and the Engineer checks that
only the EVOLVE-BLOCK changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..models import Insight, Node
from ..task import Task


class ProposalError(RuntimeError):
    """The proposer could not produce a usable program (e.g. malformed LLM output). Recorded on a node."""


@dataclass
class ProposalRequest:
    task: Task
    parents: list[Node]  # parents[0] is the program the candidate is derived from
    inspirations: list[Node]
    seed: int  # deterministic per candidate: same run seed and history give the same proposals
    insights: list[Insight] = field(default_factory=list)
    feedback: str = ""  # an earlier attempt's error, for a debug retry


@dataclass
class Proposal:
    code: str
    motivation: str
    proposer: str
    llm: dict[str, float] = field(default_factory=dict)  # prompt_tokens, completion_tokens, cost_usd


class Proposer(Protocol):
    name: str

    async def propose(self, request: ProposalRequest) -> Proposal: ...
