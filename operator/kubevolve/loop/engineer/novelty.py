"""The novelty filter: a candidate that repeats an experiment is rejected before it is evaluated.

Two checks, both of the same experiment and never of a merely similar one. The exact-duplicate check (the same
program text as a stored candidate or one being evaluated) is the store's hash lookup (`precheck`) and the
local runtime's set of programs in flight: `FailureKind.DUPLICATE`. This filter is the second: a program
whose canonical form (`canonical.py`: formatting, comments, docstrings and local names set aside) equals that
of a program already run, or of one being evaluated, is `FailureKind.NEAR_DUPLICATE`. The same edit made to
the same parent again gives the same program, so it is caught here too, however it is written.

A changed constant is a new experiment: tuning a number is what much of a search does, and such a candidate
always passes. Embedding similarity is no part of the decision (a program's embedding barely moves when a
number changes: at the old threshold of 0.98 it rejected 96 of 100 one-constant edits).

What counts as "already run": nodes that reached an evaluation and got its verdict (evaluated, or failed in a
stage for a reason of their own) and nodes proposed and awaiting evaluation (on Kubernetes, stored PROPOSED).
A node whose evaluation failed for the infrastructure's sake (the sandbox could not be set up, the Job ran
out of attempts) was not run: its experiment may be proposed again. Nodes stored before canonical forms
existed (no `canonical_hash`) are compared by their exact text only.
"""

from __future__ import annotations

from collections.abc import Container

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.loop.engineer.canonical import canonical_hash

RUN_STAGES = (Stage.EVALUATED, Stage.FAILED_QUICK, Stage.FAILED_FULL, Stage.PROPOSED)
NOT_RUN = (FailureKind.SANDBOX_FAILED, FailureKind.JOB_FAILED)  # failures of the infrastructure


def fingerprint(node: Node) -> str:
    """Set and return the node's canonical hash ("" if its program does not parse). CPU work: parses it."""
    node.canonical_hash = canonical_hash(node.code)
    return node.canonical_hash


def was_run(node: Node) -> bool:
    """Whether the node's experiment was run (or is being run): what a repeat of it is compared against."""
    return node.stage in RUN_STAGES and node.failure not in NOT_RUN


class NoveltyFilter:
    """The canonical hashes of a run's experiments, fed every stored node (`remember`) in order."""

    def __init__(self) -> None:
        self.experiments: dict[str, str] = {}  # canonical hash -> the first node that ran it

    def remember(self, node: Node) -> None:
        if node.canonical_hash and was_run(node):
            self.experiments.setdefault(node.canonical_hash, node.id)

    def check(self, node: Node, in_flight: Container[str] = frozenset()) -> str | None:
        """Why `node` (fingerprinted) repeats an experiment, or None. `in_flight`: the canonical hashes of
        candidates being evaluated and not stored yet."""
        key = node.canonical_hash
        if not key:
            return None
        earlier = self.experiments.get(key)
        if earlier is not None and earlier != node.id:
            return f"the same experiment as node {earlier} (the same program once formatting, comments and local names are set aside)"
        if key in in_flight:
            return "the same experiment as a candidate being evaluated (the same program once formatting, comments and local names are set aside)"
        return None
