"""Store latency at scale: insert, sample and insight search with 1k, 10k and 100k nodes in one run.

For every store available: SQLite always; Weaviate when WEAVIATE_URL points at a server (under a collection
prefix of its own, dropped afterwards). Nodes look like a real run's: ~1 KB programs, 384-d unit embeddings
(MiniLM's size), 70% evaluated with a score, four islands. At each size it measures:

- insert: `add_node` (seq assignment included), timed over the last `--inserts` nodes added to reach the size;
- best / recent / count: the sampler's reads (`best_node`, `list_nodes` of the last 64 seqs, `count_nodes`);
- insights: `search_insights(k=4)` over one insight per node (what the Researcher asks before every proposal):
  the first search of a fresh store handle, then the next ones;
- replay: `iter_nodes` over the whole run (what a propose step or a restarted engine reads first).

    python benchmarks/store_scale.py [--sizes 1000,10000,100000] [--stores sqlite,weaviate] [--inserts 300]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from kubevolve.core.models import Insight, Node, Stage
from kubevolve.store import Store, open_store

DIM = 384
RUN = "scale"
CODE = "def solve(xs):\n" + "".join(f"    x{i} = sorted(xs)[{i} % len(xs)]  # step {i}\n" for i in range(24))


def make_node(i: int, rng: np.random.Generator) -> Node:
    vector = rng.standard_normal(DIM).astype(np.float32)
    evaluated = rng.random() < 0.7
    return Node(
        run_id=RUN,
        code=CODE + f"    return {i}\n",
        island=i % 4,
        generation=i // 100,
        motivation=f"candidate {i}: try a different ordering of the inner loop",
        stage=Stage.EVALUATED if evaluated else Stage.FAILED_QUICK,
        score=float(rng.random()) if evaluated else None,
        metrics={"score": 0.5},
        embedding=(vector / np.linalg.norm(vector)).tolist(),
    )


def timed(fn: Callable[[], object], *, budget_s: float = 2.0, max_reps: int = 50) -> list[float]:
    """Seconds per call: at least 3 calls, then more until the budget or max_reps is spent."""
    times: list[float] = []
    while len(times) < 3 or (sum(times) < budget_s and len(times) < max_reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ms(times: list[float], q: float = 0.5) -> str:
    ordered = sorted(times)
    return f"{ordered[min(int(len(ordered) * q), len(ordered) - 1)] * 1000:.2f}"


@contextmanager
def sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory(prefix="kubevolve-scale-") as tmp:
        store = open_store(f"sqlite://{Path(tmp) / 'store.db'}")
        try:
            yield store
        finally:
            store.close()


@contextmanager
def weaviate_store() -> Iterator[Store]:
    from kubevolve.store.weaviate.connection import WeaviateSettings, connect
    from kubevolve.store.weaviate.schema import drop_collections

    base = os.environ["WEAVIATE_URL"]
    prefix = f"KvBench{uuid.uuid4().hex[:10]}"
    url = f"{base}{'&' if '?' in base else '?'}prefix={prefix}"
    store = open_store(url, tenant="bench")
    try:
        yield store
    finally:
        store.close()
        client = connect(WeaviateSettings.from_url(url))
        try:
            drop_collections(client, prefix)
        finally:
            client.close()


def reopen(store: Store) -> Store:
    """A second handle on the same store, as a new process would open it (nothing cached yet)."""
    if type(store).__name__ == "SQLiteStore":
        return open_store(str(store.path), tenant=store.tenant)
    return store  # Weaviate caches nothing on the client


def prefill(store: Store, nodes: list[Node]) -> None:
    """Reach a size quickly. Weaviate gets a batch insert with seqs precomputed (one writer, nothing to claim);
    SQLite gets add_node itself, which is already fast."""
    if type(store).__name__ != "WeaviateStore":
        for node in nodes:
            store.add_node(node)
        return
    from weaviate.classes.data import DataObject

    from kubevolve.store.weaviate import node_props

    top = sum(store.count_nodes(RUN).values())
    objects = []
    for offset, node in enumerate(nodes):
        props, vector = node_props(node, top + offset)
        objects.append(DataObject(properties=props, uuid=store._uuid("node", node.id), vector=vector))
    for start in range(0, len(objects), 500):
        res = store._nodes.data.insert_many(objects[start : start + 500])
        if res.has_errors:
            raise SystemExit(f"prefill failed: {next(iter(res.errors.values())).message}")


def measure(store: Store, size: int, have: int, inserts: int, rng: np.random.Generator) -> dict[str, str]:
    measured = min(inserts, size - have)
    prefill(store, [make_node(i, rng) for i in range(have, size - measured)])
    insert_times = []
    for i in range(size - measured, size):
        node = make_node(i, rng)
        start = time.perf_counter()
        store.add_node(node)
        insert_times.append(time.perf_counter() - start)
    for i in range(have, size):  # one insight per node, as the Analyzer leaves them
        vector = rng.standard_normal(DIM).astype(np.float32)
        text = f"candidate {i}: reordering the inner loop raised the score by {i % 7} percent"
        store.add_insight(Insight(run_id=RUN, text=text, node_ids=[f"n{i}"], embedding=vector.tolist()))
    query = rng.standard_normal(DIM).astype(np.float32)
    query = (query / np.linalg.norm(query)).tolist()
    fresh = reopen(store)
    start = time.perf_counter()
    fresh.search_insights(RUN, query, 4)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    replayed = sum(1 for _ in store.iter_nodes(RUN))
    replay_s = time.perf_counter() - start
    assert replayed == size, (replayed, size)
    row = {
        "insert p50": ms(insert_times),
        "insert p99": ms(insert_times, 0.99),
        "best": ms(timed(lambda: store.best_node(RUN))),
        "recent 64": ms(timed(lambda: store.list_nodes(RUN, after_seq=size - 65))),
        "count": ms(timed(lambda: store.count_nodes(RUN))),
        "insights first": f"{first_s * 1000:.1f}",
        "insights k=4": ms(timed(lambda: fresh.search_insights(RUN, query, 4))),
        "replay": f"{replay_s:.2f} s",
    }
    if fresh is not store:
        fresh.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--stores", default="sqlite,weaviate")
    parser.add_argument("--inserts", type=int, default=300, help="add_node calls timed at each size")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    console = Console(width=160)
    stores = {"sqlite": sqlite_store}
    if "weaviate" in args.stores:
        if os.environ.get("WEAVIATE_URL"):
            stores["weaviate"] = weaviate_store
        else:
            console.print("[yellow]WEAVIATE_URL is not set: Weaviate skipped[/]")
    stores = {k: v for k, v in stores.items() if k in args.stores}
    columns = ["insert p50", "insert p99", "best", "recent 64", "count"]
    columns += ["insights first", "insights k=4", "replay"]
    table = Table(title="Store latency per call (ms unless noted), one run of N nodes, 384-d embeddings")
    for name in ["store", "nodes", *columns]:
        table.add_column(name, justify="left" if name == "store" else "right")
    for kind, opener in stores.items():
        rng = np.random.default_rng(0)
        with opener() as store:
            have = 0
            for size in sizes:
                started = time.monotonic()
                row = measure(store, size, have, args.inserts, rng)
                have = size
                table.add_row(kind, f"{size:,}", *(row[c] for c in columns))
                console.print(
                    f"{kind} {size:,} nodes measured in {time.monotonic() - started:.0f} s", style="dim"
                )
    console.print(table)


if __name__ == "__main__":
    main()
