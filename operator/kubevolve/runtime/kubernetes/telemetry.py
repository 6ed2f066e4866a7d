"""The operator's Prometheus metrics (families defined in kubevolve.observe.metrics): reconciles and their duration,
runs by phase per namespace, how long each Job waited for its pod to start (queueing, Kueue admission), and
each run's candidate metrics, read from the store.

On a cluster the steps run in pods that exit, so nobody else can export a run's candidates, durations and
LLM usage: the operator reads them from the store at each reconcile (`RunFeed`) into the same families that
`kubevolve run --metrics-port` feeds, and the same dashboards work in both places. After a restart each run's
nodes are read once more from the first, so the counters come back at the store's totals (Prometheus sees
the same values, not a reset).

The phase map and the set of Jobs already measured are in-memory conveniences for the exporter only; after a
restart they are rebuilt as runs are reconciled (a Job that started meanwhile may be measured once more).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.core.models import Node
from kubevolve.core.spec import RunSpec
from kubevolve.observe.metrics import METRICS, Metrics, drop_run_series
from kubevolve.observe.run_metrics import RunMetrics
from kubevolve.runtime.kubernetes.context import OperatorContext
from kubevolve.runtime.kubernetes.observe import ACTIVE, JobInfo, parse_time
from kubevolve.runtime.kubernetes.resources import TaskFacts, evaluation_gpus
from kubevolve.runtime.kubernetes.snapshot import PHASES, Snapshot
from kubevolve.store.base import NotFound, Store, StoreError

log = logging.getLogger("kubevolve.operator")

# A node may be stored with a seq below ones already read (a Weaviate seq claim fills a free slot under the
# top), so each pass reads again this many seqs below the highest one read and skips the nodes it has seen.
SEQ_MARGIN = 64


def observe_reconcile(ctx: OperatorContext, namespace: str, name: str, seconds: float, result: str) -> None:
    """One pass of a run's loop; the run's phase was noted in `ctx.phases` by the pass itself."""
    METRICS.observe_reconcile(namespace, seconds, result)
    publish_phases(ctx, namespace)


def forget_run(ctx: OperatorContext, namespace: str, name: str) -> None:
    ctx.phases.pop((namespace, name), None)
    feed = ctx.feeds.pop((namespace, name), None)
    if feed is not None:
        feed.metrics.remove()
    publish_phases(ctx, namespace)


def publish_phases(ctx: OperatorContext, namespace: str) -> None:
    counts = Counter(str(PHASES[p]) for (ns, _), p in ctx.phases.items() if ns == namespace and p in PHASES)
    METRICS.set_runs_by_phase(namespace, dict(counts))


def observe_job(ctx: OperatorContext, body: Mapping[str, Any], event_type: str, run: str, role: str) -> None:
    """Once per Job: the seconds from its creation to its start (status.startTime)."""
    meta = body.get("metadata") or {}
    key = (meta.get("namespace"), meta.get("name"))
    if event_type == "DELETED":
        ctx.started_jobs.discard(key)
        return
    started = parse_time((body.get("status") or {}).get("startTime"))
    created = parse_time(meta.get("creationTimestamp"))
    if started is None or created is None or key in ctx.started_jobs:
        return
    ctx.started_jobs.add(key)
    METRICS.admission_wait.labels(key[0], run, role).observe(max(0.0, started - created))


async def feed_run(
    ctx: OperatorContext,
    store: Store,
    namespace: str,
    spec: RunSpec,
    facts: TaskFacts,
    snap: Snapshot,
    jobs: list[JobInfo],
    *,
    over: bool,
) -> None:
    """Bring the run's candidate metrics up to date with the store (`over`: the run has finished); a store
    error only delays them."""
    assert spec.name is not None, "parse_spec names every run after its object"
    key = (namespace, spec.name)
    gpus, slots = evaluation_gpus(spec, facts), spec.parallelism.evaluators
    feed = ctx.feeds.get(key)
    if feed is None:
        feed = ctx.feeds[key] = RunFeed(spec.name, namespace, gpus=gpus, slots=slots)
    feed.metrics.gpus = gpus  # the spec may have been edited
    try:
        await asyncio.to_thread(feed.read, store, snap.nodes, snap.total)
    except StoreError as err:
        log.warning(f"metrics of {namespace}/{spec.name} not updated: {err}")
    busy = sum(1 for j in jobs if j.role == Role.EVALUATE and j.state == ACTIVE)
    feed.observe(snap.best, busy, slots, time.time(), over=over)


class RunFeed:
    """One run's candidate metrics, fed from the store: each node is counted once, when it is first read in a
    final stage; the analysis' LLM request is counted when the node is read again with its insight. The
    evaluator occupancy is busy evaluation Jobs over evaluation slots, integrated over time from the first
    busy one (as the local runner measures its slots)."""

    def __init__(self, run: str, namespace: str, *, gpus: int, slots: int, metrics: Metrics | None = None):
        self.run = run
        # a feed reads its run from the first node: series an earlier operator in this process left go first
        drop_run_series(metrics or METRICS, namespace, run)
        self.metrics = RunMetrics(run, namespace, gpus=gpus, slots=slots, metrics=metrics)
        self.top_seq = -1  # the highest seq read
        self.read_count = 0  # distinct nodes read so far: when the store holds no more, nothing is new
        self.seen: dict[str, int] = {}  # node id -> seq, for the nodes within SEQ_MARGIN of top_seq
        self.pending: set[str] = set()  # read while not final yet
        self._busy_seconds = self._slot_seconds = 0.0
        self._last: tuple[float, int, int] | None = None  # (time, busy, slots) at the previous pass

    def read(self, store: Store, known: dict[str, Node | None], stored: int | None = None) -> None:
        """Count the nodes that became final since the last pass (`known`: fresh nodes the caller has;
        `stored`: how many nodes the run holds, if the caller knows, so that a pass with none new reads none)."""
        floor = self.top_seq - SEQ_MARGIN
        new = store.iter_nodes(self.run, after_seq=floor) if stored != self.read_count else ()
        for node in new:
            if node.id in self.seen:
                continue
            self.seen[node.id] = node.seq
            self.read_count += 1
            self.top_seq = max(self.top_seq, node.seq)
            if node.stage.is_final:
                self.metrics.observe_node(node)
            else:
                self.pending.add(node.id)
        floor = self.top_seq - SEQ_MARGIN
        self.seen = {nid: seq for nid, seq in self.seen.items() if seq > floor}
        for nid in list(self.pending):
            pending = known.get(nid) or _get(store, nid)
            if pending is None or pending.stage.is_final:
                self.pending.discard(nid)
            if pending is not None and pending.stage.is_final:
                self.metrics.observe_node(pending)
        for nid in self.metrics.awaiting_analysis():
            analysed = known.get(nid) or _get(store, nid)
            if analysed is not None:
                self.metrics.observe_update(analysed)

    def observe(self, best: Node | None, busy: int, slots: int, now: float, *, over: bool = False) -> None:
        """The best score and the evaluation slots at this pass; once the run is `over`, occupancy stays at
        its final value (as a finished local run's does)."""
        m, labels = self.metrics.m, (self.metrics.namespace, self.run)
        if best is not None and best.score is not None:
            m.best_score.labels(*labels).set(best.score)
        if self._last is not None:
            since, was_busy, had_slots = self._last
            if self._slot_seconds or was_busy:
                self._busy_seconds += min(was_busy, had_slots) * (now - since)
                self._slot_seconds += had_slots * (now - since)
        self._last = None if over else (now, busy, slots)
        m.slots.labels(*labels).set(slots)
        m.slots_busy.labels(*labels).set(busy)
        if self._slot_seconds:
            m.occupancy.labels(*labels).set(self._busy_seconds / self._slot_seconds)


def _get(store: Store, node_id: str) -> Node | None:
    try:
        return store.get_node(node_id)
    except NotFound:
        return None
