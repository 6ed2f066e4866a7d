"""The Store contract: every implementation must pass these, over whatever storage it uses.

`store_factory` opens stores of one backend over ONE shared backing storage (for SQLite: one file), so a test
can open a second tenant, or a second process, over the same data. SQLite-only details (URLs, pragmas, query
plans, timings at 100k nodes) live in test_store_sqlite.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import CognitionEntry, Insight, Node, RunPhase, RunRecord, Stage
from kubevolve.store import SCHEMA_VERSION, NotFound, Store, StoreError, open_store


@dataclasses.dataclass
class StoreFactory:
    """Opens stores over one backing storage; `url` lets another process open the same storage."""

    url: str
    set_schema_version: Callable[[int], None]  # how to make the storage look written by another kubevolve
    opened: list[Store] = dataclasses.field(default_factory=list)

    def __call__(self, tenant: str = "default", *, read_only: bool = False) -> Store:
        store = open_store(self.url, tenant=tenant, read_only=read_only)
        self.opened.append(store)
        return store


def weaviate_factory() -> Iterator[StoreFactory]:
    """Stores on the Weaviate at $WEAVIATE_URL, under a collection prefix of their own (dropped afterwards), so
    runs of this suite never see each other's objects or the objects of a real install."""
    base = os.environ.get("WEAVIATE_URL")
    if not base:
        pytest.skip("WEAVIATE_URL is not set: the Weaviate contract run needs a live Weaviate")
    from kubevolve.store.weaviate.connection import WeaviateSettings, connect
    from kubevolve.store.weaviate.schema import drop_collections, write_version

    prefix = f"KvTest{uuid.uuid4().hex[:12]}"
    url = f"{base}{'&' if '?' in base else '?'}prefix={prefix}"
    settings = WeaviateSettings.from_url(url)

    def set_schema_version(version: int) -> None:
        client = connect(settings)
        try:
            write_version(client, prefix, version)
        finally:
            client.close()

    factory = StoreFactory(url=url, set_schema_version=set_schema_version)
    yield factory
    for store in factory.opened:
        store.close()
    client = connect(settings)
    try:
        drop_collections(client, prefix)
    finally:
        client.close()


@pytest.fixture(params=["sqlite", "weaviate"])
def store_factory(request: pytest.FixtureRequest, tmp_path) -> Iterator[StoreFactory]:
    if request.param == "weaviate":
        yield from weaviate_factory()
        return
    path = tmp_path / "store.db"

    def set_schema_version(version: int) -> None:
        import sqlite3

        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        conn.close()

    factory = StoreFactory(url=f"sqlite://{path}", set_schema_version=set_schema_version)
    yield factory
    for store in factory.opened:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory("default")


def make_node(run_id: str = "r1", code: str | None = None, **kwargs) -> Node:
    return Node(run_id=run_id, code=code if code is not None else f"x = {time.perf_counter_ns()}", **kwargs)


def ids(nodes) -> list[str]:
    return [n.id for n in nodes]


# nodes: writes and reads


def test_add_node_assigns_seq_per_run(store: Store) -> None:
    first = make_node()
    assert store.add_node(first) is first and first.seq == 0
    assert [store.add_node(make_node()).seq for _ in range(3)] == [1, 2, 3]
    assert store.add_node(make_node("r2")).seq == 0
    assert [n.seq for n in store.list_nodes("r1")] == [0, 1, 2, 3]


def test_every_node_field_round_trips(store: Store) -> None:
    defaults = Node(run_id="", code="")
    node = Node(
        run_id="r1",
        code="def f(x):\n    return x * 2\n",
        id="0123456789abcdef",
        parent_ids=["p1", "p2"],
        inspiration_ids=["i1"],
        island=3,
        generation=7,
        motivation="try doubling",
        diff="- x\n+ x * 2",
        canonical_hash="c1:00112233445566778899aabbccddeeff",
        metrics={"accuracy": 0.75, "latency_ms": 12.5},
        score=0.75,
        stage=Stage.EVALUATED,
        error="none",
        failure=FailureKind.CPU_LIMIT,
        log_tail="ok\ndone",
        artifacts={"plot": "ascii art", "notes": "ünïcode ✓"},
        insight_id="ins1",
        analysis={"changed": "doubled x", "next": "try tripling", "analyzer": "llm"},
        judge={"verdict": "pass", "reason": "a new idea"},
        proposer="llm:gpt",
        retry_of="f00d",
        attempt=1,
        transcript=[
            {"purpose": "researcher", "messages": [{"role": "user", "content": "hi"}], "completion": "x"}
        ],
        retrieved={"insights": ["ins0"], "cognition": ["cog1", "cog2"]},
        timings={"propose": 1.5, "full": 30.25},
        llm={"prompt_tokens": 1000.0, "cost_usd": 0.01},
        embedding=[0.5, -0.25, 1.0, 0.0],  # float32-exact values
        created_at=1700000000.125,
    )
    unchanged = [
        f.name for f in dataclasses.fields(Node) if getattr(node, f.name) == getattr(defaults, f.name)
    ]
    assert unchanged == ["seq"], "give every new Node field a non-default value here"
    store.add_node(node)
    assert node.seq == 0
    got = store.get_node(node.id)
    assert got == node and isinstance(got.stage, Stage) and got.failure is FailureKind.CPU_LIMIT
    assert store.list_nodes("r1") == [node]
    assert list(store.iter_nodes("r1")) == [node]
    assert store.best_node("r1") == node
    assert store.find_by_code_hash("r1", node.code_hash) == node


def test_duplicate_node_id_is_refused_and_the_original_kept(store: Store) -> None:
    original = store.add_node(make_node(id="dup0000000000000", motivation="first"))
    with pytest.raises(StoreError):
        store.add_node(make_node(id="dup0000000000000", motivation="second"))
    assert store.get_node("dup0000000000000") == original
    assert store.count_nodes("r1") == {Stage.PROPOSED: 1}
    assert store.add_node(make_node()).seq == 1  # no seq was burnt


def test_bad_node_is_refused_without_a_trace(store: Store) -> None:
    with pytest.raises(StoreError):
        store.add_node(make_node(embedding=[0.1, float("nan")]))
    with pytest.raises(StoreError):
        store.add_node(make_node(artifacts={"x": object()}))  # type: ignore[dict-item]
    with pytest.raises(StoreError, match="unknown stage"):
        store.add_node(make_node(stage="bogus"))  # type: ignore[arg-type]
    assert store.list_nodes("r1") == [] and store.count_nodes("r1") == {}


def test_update_node_replaces_fields_and_keeps_seq(store: Store) -> None:
    node = store.add_node(make_node(embedding=[1.0, 0.0]))
    store.add_node(make_node())
    node.stage, node.score, node.metrics = Stage.EVALUATED, 2.5, {"m": 2.5}
    node.island, node.embedding, node.code = 2, [0.0, 1.0], "y = 2"
    store.update_node(node)
    assert store.get_node(node.id) == node
    assert store.get_node(node.id).seq == 0
    assert store.count_nodes("r1") == {Stage.EVALUATED: 1, Stage.PROPOSED: 1}
    assert store.best_node("r1") == node
    assert store.find_by_code_hash("r1", node.code_hash) == node
    assert store.list_nodes("r1", island=2) == [node]


def test_update_of_a_missing_or_moved_node_changes_nothing(store: Store) -> None:
    node = store.add_node(make_node(motivation="kept"))
    with pytest.raises(NotFound):
        store.update_node(make_node(motivation="ghost"))
    moved = dataclasses.replace(node, run_id="r2", motivation="moved")
    with pytest.raises(StoreError):
        store.update_node(moved)
    assert store.get_node(node.id) == node
    assert store.list_nodes("r2") == [] and store.count_nodes("r1") == {Stage.PROPOSED: 1}


def test_get_node_by_unique_prefix(store: Store) -> None:
    a = store.add_node(make_node(id="abcd1111aaaaaaaa"))
    store.add_node(make_node(id="abcd2222bbbbbbbb"))
    assert store.get_node("abcd1") == a
    assert store.get_node("abcd1111aaaaaaaa") == a
    with pytest.raises(StoreError, match="ambiguous") as err:
        store.get_node("abcd")
    assert not isinstance(err.value, NotFound)
    for missing in ("abc", "zzzz", "abcd3", "abcd1111aaaaaaaab"):
        with pytest.raises(NotFound):
            store.get_node(missing)


def test_list_nodes_filters(store: Store) -> None:
    stages = [Stage.EVALUATED, Stage.FAILED_QUICK, Stage.EVALUATED, Stage.PROPOSED, Stage.EVALUATED]
    nodes = [store.add_node(make_node(stage=s, island=i % 2)) for i, s in enumerate(stages)]
    assert store.list_nodes("r1") == nodes
    assert store.list_nodes("r1", stages=[Stage.EVALUATED]) == [nodes[0], nodes[2], nodes[4]]
    assert store.list_nodes("r1", stages=[Stage.PROPOSED, Stage.FAILED_QUICK]) == [nodes[1], nodes[3]]
    assert store.list_nodes("r1", stages=[]) == []
    assert store.list_nodes("r1", island=1) == [nodes[1], nodes[3]]
    assert store.list_nodes("r1", after_seq=2) == nodes[3:]
    assert store.list_nodes("r1", limit=2) == nodes[:2]
    assert store.list_nodes("r1", stages=[Stage.EVALUATED], island=0, after_seq=0, limit=1) == [nodes[2]]
    assert store.list_nodes("nope") == []


def test_iter_nodes_streams_in_chunks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[type(store).__module__], "ITER_CHUNK", 4)  # the store's own module
    nodes = [store.add_node(make_node()) for _ in range(10)]
    stream = store.iter_nodes("r1")
    assert [next(stream) for _ in range(5)] == nodes[:5]
    late = store.add_node(make_node())  # written while the stream is open: no lock is held between chunks
    assert list(stream) == [*nodes[5:], late]
    assert ids(store.iter_nodes("r1", after_seq=7)) == ids([*nodes[8:], late])
    assert list(store.iter_nodes("nope")) == []


def test_count_nodes_per_stage(store: Store) -> None:
    assert store.count_nodes("r1") == {}
    for stage in [Stage.EVALUATED, Stage.EVALUATED, Stage.REJECTED_STATIC, Stage.FAILED_FULL]:
        store.add_node(make_node(stage=stage))
    store.add_node(make_node("r2", stage=Stage.PROPOSED))
    assert store.count_nodes("r1") == {Stage.EVALUATED: 2, Stage.REJECTED_STATIC: 1, Stage.FAILED_FULL: 1}
    assert store.count_nodes("r2") == {Stage.PROPOSED: 1}


def test_best_node_is_the_highest_evaluated_score_earliest_on_ties(store: Store) -> None:
    assert store.best_node("r1") is None
    store.add_node(make_node(stage=Stage.FAILED_FULL, score=100.0))
    store.add_node(make_node(stage=Stage.PROPOSED))
    store.add_node(make_node(stage=Stage.EVALUATED, score=None))
    assert store.best_node("r1") is None
    store.add_node(make_node(stage=Stage.EVALUATED, score=-3.0))
    first_tie = store.add_node(make_node(stage=Stage.EVALUATED, score=1.5))
    store.add_node(make_node(stage=Stage.EVALUATED, score=1.5))
    store.add_node(make_node(stage=Stage.EVALUATED, score=0.5))
    assert store.best_node("r1") == first_tie
    assert store.best_node("r2") is None


def test_find_by_code_hash_returns_the_first_node(store: Store) -> None:
    first = store.add_node(make_node(code="def f():\n    return 1\n"))
    store.add_node(make_node(code="def f():   \n    return 1"))  # same program up to trailing whitespace
    store.add_node(make_node(code="def f():\n    return 2\n"))
    assert store.find_by_code_hash("r1", first.code_hash) == first
    assert store.find_by_code_hash("r1", "0" * 32) is None
    assert store.find_by_code_hash("r2", first.code_hash) is None


# insights and cognition


def test_insights_list_and_search(store: Store) -> None:
    a = store.add_insight(Insight(run_id="r1", text="doubling helps", node_ids=["n1"], embedding=[1.0, 0.0]))
    b = store.add_insight(Insight(run_id="r1", text="caching helps", embedding=[0.5, 0.5]))
    c = store.add_insight(Insight(run_id="r1", text="no vector"))
    store.add_insight(Insight(run_id="r2", text="other run", embedding=[1.0, 0.0]))
    assert store.list_insights("r1") == [a, b, c]
    hits = store.search_insights("r1", [0.0, 1.0], k=5)
    assert [(i, round(s, 5)) for i, s in hits] == [(b, round(2**-0.5, 5)), (a, 0.0)]
    assert [i for i, _ in store.search_insights("r1", [1.0, 0.0], k=1)] == [a]
    with pytest.raises(StoreError):
        store.add_insight(Insight(run_id="r1", text="same id", id=a.id))
    assert store.list_insights("r1") == [a, b, c]


def cognition(title: str, text: str, vector: list[float], collection: str = "task") -> CognitionEntry:
    return CognitionEntry(
        collection=collection, title=title, text=text, source="paper", tags=["t"], embedding=vector
    )


def test_add_cognition_skips_duplicates(store: Store) -> None:
    entries = [cognition("A", "alpha", [1.0, 0.0]), cognition("B", "beta", [0.0, 1.0])]
    assert store.add_cognition(entries) == 2
    again = [cognition("A", "alpha", [0.3, 0.3]), cognition("A", "alpha v2", [1.0, 1.0])]
    assert store.add_cognition(again + [cognition("A", "alpha", [1.0, 0.0], "other")]) == 2
    gamma = cognition("C", "gamma", [1.0, 0.0])
    assert store.add_cognition([gamma, dataclasses.replace(gamma, id="other-id")]) == 1  # within a batch
    assert store.list_cognition("task") == [*entries, again[1], gamma]
    assert [e.title for e in store.list_cognition("other")] == ["A"]
    assert store.add_cognition([]) == 0


def test_bad_cognition_batch_adds_nothing(store: Store) -> None:
    kept = cognition("A", "alpha", [1.0, 0.0])
    store.add_cognition([kept])
    clash = dataclasses.replace(cognition("Z", "zeta", [1.0, 0.0]), id=kept.id)
    with pytest.raises(StoreError):
        store.add_cognition([cognition("N", "new", [1.0, 0.0]), clash])
    with pytest.raises(StoreError):
        store.add_cognition([cognition("N", "new", [1.0, 0.0]), cognition("Q", "bad", [float("inf"), 0.0])])
    assert store.list_cognition("task") == [kept]


def test_search_cognition_ranks_and_honours_min_score(store: Store) -> None:
    a, b, c = (
        cognition("A", "a", [1.0, 0.0]),
        cognition("B", "b", [1.0, 1.0]),
        cognition("C", "c", [-1.0, 0.0]),
    )
    store.add_cognition([a, b, c, cognition("D", "d", [1.0, 0.0], "other")])
    hits = store.search_cognition("task", [1.0, 0.0], k=5)
    assert [e for e, _ in hits] == [a, b, c]
    assert [s for _, s in hits] == pytest.approx([1.0, 2**-0.5, -1.0], abs=1e-6)
    assert [e for e, _ in store.search_cognition("task", [1.0, 0.0], k=5, min_score=0.5)] == [a, b]
    assert [e for e, _ in store.search_cognition("task", [1.0, 0.0], k=1, min_score=0.5)] == [a]
    assert store.search_cognition("task", [1.0, 0.0], k=5, min_score=1.5) == []
    assert store.search_cognition("nothing", [1.0, 0.0], k=5) == []


# runs


def test_runs_put_get_list(store: Store) -> None:
    old = RunRecord(id="old", task="t", spec={"a": [1, 2], "b": {"c": None}}, created_at=100.0)
    new = RunRecord(id="new", task="t", spec={}, created_at=200.0)
    store.put_run(new)
    store.put_run(old)
    assert store.get_run("old") == old
    assert [r.id for r in store.list_runs()] == ["new", "old"]
    old.phase, old.message, old.updated_at = RunPhase.RUNNING, "going", 150.0
    store.put_run(old)
    got = store.get_run("old")
    assert got == old and got.phase is RunPhase.RUNNING
    assert [r.id for r in store.list_runs()] == ["new", "old"]
    with pytest.raises(NotFound):
        store.get_run("missing")


def test_two_runs_never_see_each_others_nodes(store: Store) -> None:
    a = store.add_node(
        make_node("ra", code="same = 1", stage=Stage.EVALUATED, score=1.0, embedding=[1.0, 0.0])
    )
    b = store.add_node(
        make_node("rb", code="same = 1", stage=Stage.EVALUATED, score=9.0, embedding=[1.0, 0.0])
    )
    assert store.list_nodes("ra") == [a] and store.list_nodes("rb") == [b]
    assert store.best_node("ra") == a and store.find_by_code_hash("ra", a.code_hash) == a
    assert store.count_nodes("ra") == {Stage.EVALUATED: 1}


def test_two_tenants_never_see_each_others_anything(store_factory: StoreFactory) -> None:
    a, b = store_factory("tenant-a"), store_factory("tenant-b")
    a.put_run(RunRecord(id="r1", task="t", spec={}))
    node = a.add_node(make_node(code="shared = 1", stage=Stage.EVALUATED, score=1.0, embedding=[1.0, 0.0]))
    a.add_insight(Insight(run_id="r1", text="a's lesson", embedding=[1.0, 0.0]))
    a.add_cognition([cognition("A", "alpha", [1.0, 0.0])])
    assert b.list_runs() == []
    with pytest.raises(NotFound):
        b.get_run("r1")
    for key in (node.id, node.id[:6]):
        with pytest.raises(NotFound):
            b.get_node(key)
    with pytest.raises(NotFound):
        b.update_node(dataclasses.replace(node, motivation="hijack"))
    assert a.get_node(node.id) == node
    assert b.list_nodes("r1") == [] and list(b.iter_nodes("r1")) == [] and b.count_nodes("r1") == {}
    assert b.best_node("r1") is None and b.find_by_code_hash("r1", node.code_hash) is None
    assert b.list_insights("r1") == [] and b.search_insights("r1", [1.0, 0.0], k=5) == []
    assert b.list_cognition("task") == [] and b.search_cognition("task", [1.0, 0.0], k=5) == []
    assert b.add_cognition([cognition("A", "alpha", [1.0, 0.0])]) == 1  # dedup is per tenant
    assert b.add_node(make_node()).seq == 0  # seq is per tenant and run
    assert a.count_nodes("r1") == {Stage.EVALUATED: 1} and len(a.list_cognition("task")) == 1


def test_a_tenant_cannot_overwrite_another_tenants_objects(store_factory: StoreFactory) -> None:
    """Objects with the very same ids in two tenants are two objects: writes in B never reach A's."""
    a, b = store_factory("tenant-a"), store_factory("tenant-b")
    run_a = RunRecord(id="r1", task="t", spec={"lab": "a"}, created_at=100.0)
    a.put_run(run_a)
    node = a.add_node(
        make_node(
            id="5a5a5a5a5a5a5a5a", stage=Stage.EVALUATED, score=1.0, embedding=[1.0, 0.0], motivation="a"
        )
    )
    insight = a.add_insight(
        Insight(run_id="r1", text="a's lesson", id="shared-insight", embedding=[1.0, 0.0])
    )
    b.put_run(RunRecord(id="r1", task="t", spec={"lab": "b"}, created_at=200.0))
    twin = b.add_node(dataclasses.replace(node, motivation="b", score=99.0, seq=-1))
    assert twin.seq == 0
    twin.motivation = "b, updated"
    b.update_node(twin)
    b.add_insight(Insight(run_id="r1", text="b's lesson", id="shared-insight", embedding=[0.0, 1.0]))
    assert a.get_run("r1") == run_a and [r.spec for r in a.list_runs()] == [{"lab": "a"}]
    assert a.get_node(node.id) == node and a.list_nodes("r1") == [node] and a.best_node("r1") == node
    assert a.list_insights("r1") == [insight]
    assert [i for i, _ in a.search_insights("r1", [0.0, 1.0], k=5)] == [insight]
    assert b.get_node(node.id).motivation == "b, updated" and b.best_node("r1").score == 99.0
    assert [i.text for i in b.list_insights("r1")] == ["b's lesson"]


def test_a_read_only_store_follows_a_writer_and_writes_nothing(store_factory: StoreFactory) -> None:
    writer = store_factory("lab")
    run = RunRecord(id="r1", task="task", spec={"seed": 1})
    writer.put_run(run)
    first = writer.add_node(make_node(stage=Stage.EVALUATED, score=1.0, embedding=[1.0, 0.0]))
    insight = writer.add_insight(Insight(run_id="r1", text="lesson", node_ids=[first.id]))
    writer.add_cognition([cognition("A", "alpha", [1.0, 0.0])])
    reader = store_factory("lab", read_only=True)
    assert reader.list_runs() == [run] and reader.get_run("r1") == run
    assert reader.get_node(first.id[:6]) == first and reader.best_node("r1") == first
    assert reader.list_insights("r1") == [insight] and len(reader.list_cognition("task")) == 1
    later = writer.add_node(make_node())  # committed while the reader is open
    assert list(reader.iter_nodes("r1", after_seq=first.seq)) == [later]
    assert reader.count_nodes("r1") == {Stage.EVALUATED: 1, Stage.PROPOSED: 1}
    writes = [
        lambda: reader.put_run(dataclasses.replace(run, message="hijack")),
        lambda: reader.add_node(make_node()),
        lambda: reader.update_node(dataclasses.replace(first, motivation="hijack")),
        lambda: reader.add_insight(Insight(run_id="r1", text="hijack")),
        lambda: reader.add_cognition([cognition("B", "beta", [0.0, 1.0])]),
    ]
    for write in writes:
        with pytest.raises(StoreError, match="read-only"):
            write()
    assert writer.list_runs() == [run] and writer.list_nodes("r1") == [first, later]
    assert writer.list_insights("r1") == [insight] and len(writer.list_cognition("task")) == 1


def test_a_read_only_open_of_a_tenant_with_nothing_stored_creates_nothing(
    store_factory: StoreFactory,
) -> None:
    store_factory("lab").put_run(RunRecord(id="r1", task="t", spec={}))
    for _ in range(2):  # the first refused open left no tenant behind
        with pytest.raises(StoreError, match="'other-lab' has nothing stored"):
            store_factory("other-lab", read_only=True)


# schema and lifecycle


def test_reopening_keeps_data_and_schema(store_factory: StoreFactory) -> None:
    first = store_factory()
    node = first.add_node(make_node())
    first.close()
    for _ in range(2):
        again = store_factory()
        assert again.get_node(node.id) == node
        again.close()
    with pytest.raises(StoreError):
        first.get_node(node.id)  # closed


def test_newer_schema_is_refused_and_left_untouched(store_factory: StoreFactory) -> None:
    store = store_factory()
    node = store.add_node(make_node())
    store.close()
    store_factory.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="upgrade kubevolve"):
        store_factory()
    store_factory.set_schema_version(SCHEMA_VERSION)
    assert store_factory().get_node(node.id) == node


# concurrency


def test_threads_adding_nodes_get_unique_seqs(store: Store) -> None:
    def work() -> None:
        for _ in range(40):
            store.add_node(make_node())
            store.best_node("r1")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    nodes = store.list_nodes("r1")
    assert [n.seq for n in nodes] == list(range(320)) and len(set(ids(nodes))) == 320


async def test_usable_from_asyncio_to_thread(store: Store) -> None:
    added = await asyncio.gather(*(asyncio.to_thread(store.add_node, make_node()) for _ in range(20)))
    assert sorted(n.seq for n in added) == list(range(20))
    assert await asyncio.to_thread(store.count_nodes, "r1") == {Stage.PROPOSED: 20}


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from kubevolve.core.models import Node
    from kubevolve.store import open_store
    url, go, worker, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = open_store(url, tenant="default")
    while not os.path.exists(go):
        time.sleep(0.005)
    for i in range(count):
        store.add_node(Node(run_id="shared", code=f"w{worker}_{i} = 1", motivation=worker))
    store.close()
    """
)


def test_processes_writing_one_store_get_unique_seqs(store_factory: StoreFactory, tmp_path) -> None:
    store = store_factory()  # the schema exists before the writers start, as it would in a real run
    go, workers, per_worker = tmp_path / "go", 4, 60
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, store_factory.url, str(go), str(w), str(per_worker)])
        for w in range(workers)
    ]
    time.sleep(0.5)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    nodes = store.list_nodes("shared")
    assert [n.seq for n in nodes] == list(range(workers * per_worker))
    by_worker = {str(w): sorted(n.code for n in nodes if n.motivation == str(w)) for w in range(workers)}
    assert all(len(codes) == per_worker for codes in by_worker.values())
    assert store.count_nodes("shared") == {Stage.PROPOSED: workers * per_worker}
