"""What the store says about a run, read in one pass per reconcile, and the few writes the operator makes.

The operator writes only: the run record (so the step pods find the run and its spec, and `kubevolve status`
shows the phase); the result an evaluation pod published (results.py: evaluation pods cannot reach the
store); and, for an evaluation whose Jobs all failed, the candidate's final failed state. Every other write
is a step's. All functions here are synchronous; the reconciler calls them in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, RunPhase, RunRecord, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.loop.analyze.analyzer import ANALYSED_STAGES
from kubevolve.loop.budget import failure_streak, llm_cost
from kubevolve.runtime.kubernetes.names import key_of_node, parse_key
from kubevolve.runtime.kubernetes.resources import TaskFacts
from kubevolve.store.base import NotFound, Store

PHASES = {
    "Pending": RunPhase.PENDING,
    "Running": RunPhase.RUNNING,
    "Suspended": RunPhase.STOPPED,
    "Succeeded": RunPhase.SUCCEEDED,
    "Failed": RunPhase.FAILED,
}


@dataclass
class Snapshot:
    record: RunRecord
    counts: dict[Stage, int]
    proposed: list[Node]  # PROPOSED nodes (awaiting evaluation), oldest first
    nodes: dict[str, Node | None]  # the nodes the run's Jobs name (None: not stored yet)
    best: Node | None
    consecutive_failures: int = 0
    llm_cost: float = 0.0
    max_index: int = -1  # the largest proposal index among stored node ids (scanned only when asked)
    recent: list[Node] = field(default_factory=list)  # the run's last nodes, oldest first (`paced`)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return self.total - self.counts.get(Stage.PROPOSED, 0)


def record_spec(spec: RunSpec, run: str) -> dict:
    data = spec.to_dict()
    data["name"] = run
    return data


def ensure_run(store: Store, run: str, spec: RunSpec, facts: TaskFacts) -> RunRecord:
    """The run record, created (or its spec refreshed after an edit) so that the step pods can load it."""
    data = record_spec(spec, run)
    try:
        record = store.get_run(run)
    except NotFound:
        record = RunRecord(id=run, task=facts.name, spec=data, phase=RunPhase.PENDING)
        store.put_run(record)
        return record
    if record.spec != data:
        record.spec, record.updated_at = data, time.time()
        store.put_run(record)
    return record


def set_phase(store: Store, record: RunRecord, phase: str, message: str) -> None:
    """Record the run's phase; the record is read again just before, so that what a step wrote since the
    pass began (the task's summary) is kept."""
    target = PHASES[phase]
    if record.phase != target or record.message != message:
        current = store.get_run(record.id)
        current.phase, current.message, current.updated_at = target, message, time.time()
        store.put_run(current)
        record.phase, record.message = target, message


def consecutive_failures(nodes: Iterable[Node]) -> int:
    """The failure streak at the end of `nodes` (the run's last ones, oldest first)."""
    streak = 0
    for node in nodes:
        streak = failure_streak(streak, node)
    return streak


def paced(spec: RunSpec) -> bool:
    """The run's proposals follow the pacer (loop/pacing.py), which the operator rebuilds at every pass from
    the run's last nodes' timings: `parallelism.proposalsAhead` is not set."""
    return spec.parallelism.proposals_ahead is None


def pacer_window(spec: RunSpec) -> int:
    """How many of the run's last nodes the pacer learns from: its moving averages weigh a new sample 1/4, so
    sixteen samples carry all but 1% of an average's weight, and up to one per slot may still lack an
    evaluation time (being evaluated)."""
    return 16 + spec.parallelism.evaluators


def take_snapshot(
    store: Store,
    run: str,
    spec: RunSpec,
    facts: TaskFacts,
    node_ids: Iterable[str],
    *,
    scan_indices: bool = False,
    slack: int = 0,
) -> Snapshot:
    record = ensure_run(store, run, spec, facts)
    # The reads are separate queries while steps write: read the nodes the Jobs name first, so that a node
    # found here is also in the counts read after it (nodes are only ever added, and only ever become final).
    nodes: dict[str, Node | None] = {}
    for nid in set(node_ids):
        try:
            nodes[nid] = store.get_node(nid)
        except NotFound:
            nodes[nid] = None
    counts = store.count_nodes(run)
    snap = Snapshot(
        record=record,
        counts=counts,
        proposed=store.list_nodes(run, stages=[Stage.PROPOSED]) if counts.get(Stage.PROPOSED) else [],
        nodes=nodes,
        best=store.best_node(run),
    )
    # one read of the run's last nodes serves both: the failure streak (enough of them for the `maxFailures`
    # rule: a longer streak is still at least `maxFailures`) and the pacer's timings
    failures = spec.budget.max_failures + slack if spec.budget.max_failures else 0
    window = max(failures, pacer_window(spec) if paced(spec) else 0)
    if window:
        snap.recent = store.list_nodes(run, after_seq=snap.total - window - 1)
    if failures:
        snap.consecutive_failures = consecutive_failures(snap.recent[-failures:])
    if spec.budget.max_llm_cost is not None or scan_indices:
        for node in store.iter_nodes(run):
            snap.llm_cost += llm_cost(node)
            key = key_of_node(run, node.id)
            if key is not None:
                snap.max_index = max(snap.max_index, parse_key(key)[0])
    return snap


def record_failed(
    store: Store, node_id: str, error: str, stage: Stage, kind: FailureKind = FailureKind.JOB_FAILED
) -> Node | None:
    """Make a PROPOSED node final as failed (its evaluation Jobs ran out of attempts, or none can be made
    for it); None if already final."""
    node = store.get_node(node_id)
    if node.stage.is_final:
        return None
    node.fail(stage, kind, error[:500])
    node.log_tail = node.log_tail or error
    store.update_node(node)
    return node


def needs_analysis(node: Node | None, spec: RunSpec) -> bool:
    """An analysis Job is due: an evaluated or failed candidate without its insight, unless the run's analyzer
    is off. (A proposal rejected before evaluation is analysed offline by its proposal step.)"""
    return (
        node is not None
        and node.stage in ANALYSED_STAGES
        and not node.insight_id
        and spec.analyzer_mode != "off"
    )
