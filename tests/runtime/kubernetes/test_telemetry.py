"""The operator's run metrics, read from the store: each node counted once, when first seen final; the
analysis' LLM request when it lands; nothing lost to a seq stored below the top; the same totals after a
restart (a fresh feed reads the run again)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.observe.metrics import Metrics
from kubevolve.runtime.kubernetes.telemetry import RunFeed
from kubevolve.store.sqlite import SQLiteStore

RUN, NS = "metered", "lab-a"


def analysis_entry(cost: float) -> dict:
    return {
        "purpose": "analyzer",
        "model": "m1",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_usd": cost,
    }


def feed_with_registry(**kwargs) -> tuple[RunFeed, CollectorRegistry]:
    registry = CollectorRegistry()
    return RunFeed(RUN, NS, gpus=2, slots=4, metrics=Metrics(registry), **kwargs), registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"namespace": NS, "run": RUN, **labels}) or 0.0


def add(store: SQLiteStore, stage: Stage, **fields) -> Node:
    return store.add_node(Node(run_id=RUN, code=f"x = {fields.pop('x', 0)}", stage=stage, **fields))


def test_nodes_are_counted_once_when_they_become_final(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    feed, registry = feed_with_registry()
    done = add(store, Stage.EVALUATED, score=1.0, timings={"quick": 2.0, "full": 10.0}, x=1)
    running = add(store, Stage.PROPOSED, x=2)
    feed.read(store, {})
    feed.read(store, {})  # nothing new: nothing counted twice
    assert sample(registry, "kubevolve_candidates_total", outcome="evaluated") == 1
    assert sample(registry, "kubevolve_evaluation_gpu_seconds_total", stage="full") == 20.0
    assert running.id in feed.pending

    running.fail(Stage.FAILED_QUICK, FailureKind.RAISED, "Traceback ...\nValueError: bad")
    store.update_node(running)
    feed.read(store, {})
    assert sample(registry, "kubevolve_candidates_total", outcome="failed_quick") == 1
    assert (
        sample(registry, "kubevolve_candidate_failures_total", outcome="failed_quick", reason="raised") == 1
    )
    assert not feed.pending

    done.insight_id, done.transcript = "i1", [analysis_entry(0.25)]  # the analysis lands later
    store.update_node(done)
    feed.read(store, {})
    feed.read(store, {})
    assert sample(registry, "kubevolve_llm_cost_usd_total", model="m1", purpose="analyzer") == 0.25
    assert sample(registry, "kubevolve_candidates_total", outcome="evaluated") == 1


def test_a_node_stored_below_the_top_seq_is_still_counted(tmp_path):
    """Weaviate's seq claims may fill a free slot under the highest seq: such a node must not be skipped."""
    store = SQLiteStore(tmp_path / "s.db")
    feed, registry = feed_with_registry()
    for i in range(5):
        add(store, Stage.EVALUATED, score=float(i), x=i)

    def set_seqs(sql: str, *params) -> None:  # seqs the way concurrent claims leave them (SQLite's are dense)
        with store._conn() as conn:
            conn.execute(f"UPDATE nodes SET seq = {sql}", params)

    set_seqs("seq + 10 WHERE seq >= 2")  # 0, 1, 12, 13, 14
    feed.read(store, {})
    late = add(store, Stage.EVALUATED, score=0.5, x=99)
    set_seqs("5 WHERE id = ?", late.id)  # claimed a free slot below the top after the top was read
    feed.read(store, {})
    assert sample(registry, "kubevolve_candidates_total", outcome="evaluated") == 6


def test_a_restarted_feed_comes_back_at_the_same_totals(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    for i in range(3):
        add(store, Stage.EVALUATED, score=float(i), timings={"full": 1.0}, x=i)
    add(store, Stage.FAILED_FULL, error="timed out", x=9)
    first, before = feed_with_registry()
    first.read(store, {})
    second, after = feed_with_registry()  # the operator restarted
    second.read(store, {})
    for name, labels in [
        ("kubevolve_candidates_total", {"outcome": "evaluated"}),
        ("kubevolve_candidates_total", {"outcome": "failed_full"}),
        ("kubevolve_evaluation_duration_seconds_count", {"stage": "full"}),
    ]:
        assert sample(before, name, **labels) == sample(after, name, **labels) > 0


def test_occupancy_is_busy_evaluation_time_over_slot_time(tmp_path):
    feed, registry = feed_with_registry()
    feed.observe(None, busy=0, slots=4, now=100.0)  # nothing has run yet: not counted
    feed.observe(None, busy=4, slots=4, now=200.0)
    feed.observe(None, busy=2, slots=4, now=210.0)  # 10 s with 4 of 4 busy
    feed.observe(None, busy=0, slots=4, now=220.0, over=True)  # 10 s with 2 of 4 busy; the run is over
    feed.observe(None, busy=0, slots=4, now=900.0, over=True)  # passes after the end change nothing
    assert sample(registry, "kubevolve_evaluator_occupancy_ratio") == 0.75
    assert sample(registry, "kubevolve_evaluator_slots_busy") == 0
    assert sample(registry, "kubevolve_evaluator_slots") == 4


def test_a_pass_with_no_new_node_reads_only_the_pending_ones(tmp_path):
    """The operator passes the run's node count: when it says nothing was added, no scan of the run."""
    scans = []

    class Counting(SQLiteStore):
        def iter_nodes(self, run_id, *, after_seq=-1):
            scans.append(after_seq)
            return super().iter_nodes(run_id, after_seq=after_seq)

    store = Counting(tmp_path / "s.db")
    feed, registry = feed_with_registry()
    add(store, Stage.EVALUATED, score=1.0, x=1)
    running = add(store, Stage.PROPOSED, x=2)
    feed.read(store, {}, stored=2)
    feed.read(store, {}, stored=2)  # nothing added: the pending node is re-read by id, the run is not scanned
    assert len(scans) == 1
    running.stage, running.score = Stage.EVALUATED, 2.0
    store.update_node(running)
    feed.read(store, {}, stored=2)
    assert len(scans) == 1 and sample(registry, "kubevolve_candidates_total", outcome="evaluated") == 2
    add(store, Stage.FAILED_QUICK, error="boom", x=3)
    feed.read(store, {}, stored=3)
    assert len(scans) == 2 and sample(registry, "kubevolve_candidates_total", outcome="failed_quick") == 1
