"""WeaviateStore: the Store protocol on Weaviate, the one store that pods on different machines share.

A store is opened for one tenant (a Kubernetes namespace) and only ever holds collection handles bound to that
tenant, so no call it makes can address another lab's objects. Object ids are uuid5(tenant, kind, id) (see
connection.py): every retry of a write lands on the same object, and an exact lookup is one GET by id.

Per-run `seq` without transactions. Weaviate has no compare-and-set, so two pods adding nodes to one run at
the same moment cannot both "take the next number" safely. A node claims a seq by being stored with it, and
keeps it only if, read back after the write, no other node of the run holds the same seq; otherwise it backs
off (randomised) and claims the lowest slot no other node holds. Two winners of one slot are impossible: each
winner's read came after its own write and saw no other claim, so each read came before the other's write,
which contradicts write-before-read on both sides. This needs read-after-write consistency: on a replicated
Weaviate open the store with `consistency=quorum` (or `all`). Seqs are unique and, in practice, dense; a
gap can only remain if contenders all leave a slot at once and nobody claims it afterwards. Within a process a
lock serialises add_node, so contention happens only between pods. A node is visible under its claimed seq
while it checks (milliseconds); a pod that dies in between leaves its node stored with that seq, never lost.

Vectors: the exact float32 embedding is stored beside the indexed vector and every similarity is recomputed
with `vectors.rank`, so scores and tie order (earliest first) match SQLiteStore. Zero vectors are kept out of
the index (cosine is undefined for them) and merged back in with similarity 0.0. Unlike SQLiteStore, one
tenant's index holds one dimension: a node with an embedding of another length is refused with StoreError.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

from kubevolve.core.models import CognitionEntry, Insight, Node, RunRecord, Stage
from kubevolve.store.base import NotFound, StoreError
from kubevolve.store.codec import (
    cognition_from_row,
    content_key,
    doc_columns,
    insight_from_row,
    node_columns,
    node_from_row,
    run_from_json,
    run_to_json,
)
from kubevolve.store.weaviate.connection import WeaviateSettings
from kubevolve.store.weaviate.operations import (
    Props,
    TenantCollections,
    all_of,
    blob_of,
    eq,
    filter_class,
    node_filter,
    now_us,
    vector_props,
)

ITER_CHUNK = 1000  # seq window per query when scanning a run (range filters, no server-side sort)
QUERY_LIMIT = 10_000  # Weaviate's default QUERY_MAXIMUM_RESULTS
CLAIM_WINDOW = 64  # slots below the highest seq searched for a free one
MAX_CLAIMS = 60  # attempts to claim a seq before add_node gives up (and removes its node)
MIN_PREFIX = 4  # shortest id prefix get_node resolves
BATCH = 200  # cognition entries per insert_many


def node_props(node: Node, seq: int) -> tuple[Props, Any]:
    """(properties, vector to index) of a node; raises StoreError for what cannot be stored, before any write."""
    stage, score, island, code_hash, data, blob = node_columns(node)
    props, vector = vector_props(blob)
    props |= {"node_id": node.id, "run_id": node.run_id, "seq": seq, "stage": stage, "island": island}
    props |= {"code_hash": code_hash, "data": data, "scored": score is not None and not math.isnan(score)}
    if score is not None and props["scored"]:
        props["score"] = max(min(float(score), 1.7e308), -1.7e308)  # +-inf sort as the extremes
    return props, vector


class WeaviateStore(TenantCollections):
    """The Store protocol over a Weaviate server, scoped to one tenant. Usable from several threads at once."""

    # runs

    def put_run(self, run: RunRecord) -> None:
        self._writable("put_run")
        uid = self._uuid("run", run.id)
        data = run_to_json(run)
        stored = self._get(self._runs, "put_run", uid, ["position"])
        props = {"run_id": run.id, "created_at": run.created_at, "data": data}
        props["position"] = stored["position"] if stored else now_us()
        if stored is None:
            try:
                self._call("put_run", self._insert, self._runs, uid, props, None, f"run {run.id}")
                return
            except StoreError:
                if self._get(self._runs, "put_run", uid, ["position"]) is None:
                    raise  # else another pod created it meanwhile: replace it below
        self._call("put_run", self._runs.data.replace, uuid=uid, properties=props)

    def get_run(self, run_id: str) -> RunRecord:
        props = self._get(self._runs, "get_run", self._uuid("run", run_id))
        if props is None:
            raise NotFound(f"no run {run_id!r} in tenant {self.tenant!r}")
        return run_from_json(props["data"])

    def list_runs(self) -> list[RunRecord]:
        rows = list(self._pages("list_runs", self._runs, None, ("position", "run_id")))
        rows.sort(key=lambda p: (-p["created_at"], -p["position"]))
        return [run_from_json(p["data"]) for p in rows]

    # nodes

    def _top_seq(self, run_id: str, floor: int = 0) -> int | None:
        """The highest seq of the run at or above `floor`; None if there is none."""
        objs = self._call(
            "reading the last seq",
            self._fetch,
            self._nodes,
            node_filter(run_id, seq_from=floor or None),
            sort=[("seq", False)],
            limit=1,
            props=["seq"],
        )
        return objs[0].properties["seq"] if objs else None

    def _free_seq(self, run_id: str, uid: Any) -> int:
        """The lowest slot near the top of the run that no other node holds."""
        hint = self._seq_hint.get(run_id)
        if hint is None:  # seqs are dense, so the count tells where the top is without sorting the run
            total = self._call("add_node", self._nodes.aggregate.over_all, filters=node_filter(run_id))
            hint = max(0, (total.total_count or 0) - CLAIM_WINDOW)
        top = self._top_seq(run_id, hint)
        if top is None and hint:
            top = self._top_seq(run_id)
        if top is None:
            return 0
        floor = max(0, top - CLAIM_WINDOW)
        objs = self._call(
            "add_node",
            self._fetch,
            self._nodes,
            node_filter(run_id, seq_from=floor),
            limit=4 * CLAIM_WINDOW,
            props=["seq"],
        )
        held = {o.properties["seq"] for o in objs if o.uuid != uid}
        self._seq_hint[run_id] = floor
        return next(s for s in range(floor, top + 2) if s not in held)

    def _held_by_another(self, run_id: str, seq: int, uid: Any) -> bool:
        objs = self._fetch(
            self._nodes, node_filter(run_id, seq_from=seq, seq_to=seq + 1), limit=8, props=["seq"]
        )
        return any(o.uuid != uid for o in objs)

    def add_node(self, node: Node) -> Node:
        self._writable("add_node")
        props, vector = node_props(node, -1)
        uid, what = self._uuid("node", node.id), f"node {node.id}"
        with self._add_lock:
            if self._call("add_node", self._nodes.data.exists, uid):
                raise StoreError(f"{what} already exists in tenant {self.tenant!r}; not added")
            props["seq"] = seq = self._free_seq(node.run_id, uid)
            self._call("add_node", self._insert, self._nodes, uid, props, vector, what)
            for attempt in range(MAX_CLAIMS):
                if not self._call("add_node", self._held_by_another, node.run_id, seq, uid):
                    node.seq = seq
                    return node
                time.sleep(random.uniform(0, 0.004 * 2 ** min(attempt, 6)))
                props["seq"] = seq = self._free_seq(node.run_id, uid)
                self._call("add_node", self._nodes.data.replace, uuid=uid, properties=props, vector=vector)
            self._call("add_node", self._nodes.data.delete_by_id, uid)
        raise StoreError(f"{what}: no free seq in run {node.run_id!r} after {MAX_CLAIMS} tries; not added")

    def update_node(self, node: Node) -> None:
        self._writable("update_node")
        props, vector = node_props(node, -1)
        uid = self._uuid("node", node.id)
        stored = self._get(self._nodes, "update_node", uid, ["run_id", "seq"])
        if stored is None:
            raise NotFound(f"no node {node.id} in tenant {self.tenant!r}; nothing updated")
        if stored["run_id"] != node.run_id:
            raise StoreError(
                f"node {node.id} belongs to run {stored['run_id']!r}, not {node.run_id!r}; not updated"
            )
        props["seq"] = stored["seq"]
        self._call("update_node", self._nodes.data.replace, uuid=uid, properties=props, vector=vector)

    @staticmethod
    def _node(props: Props) -> Node:
        return node_from_row((props["seq"], props["data"], blob_of(props)))

    def get_node(self, node_id: str) -> Node:
        props = self._get(self._nodes, "get_node", self._uuid("node", node_id))
        if props is not None:
            return self._node(props)
        if len(node_id) < MIN_PREFIX or any(c in node_id for c in "*?"):
            raise NotFound(
                f"no node {node_id!r} in tenant {self.tenant!r} (a prefix needs {MIN_PREFIX}+ chars)"
            )
        like = filter_class().by_property("node_id").like(node_id + "*")
        objs = self._call(
            "get_node", self._fetch, self._nodes, like, sort=[("node_id", True)], limit=3, props=["node_id"]
        )
        ids = [o.properties["node_id"] for o in objs]
        if not ids:
            raise NotFound(f"no node {node_id!r} in tenant {self.tenant!r}")
        if len(ids) > 1:
            shown = ", ".join(ids[:2]) + (", ..." if len(ids) > 2 else "")
            raise StoreError(
                f"node id prefix {node_id!r} is ambiguous (matches {shown}); give more characters"
            )
        return self.get_node(ids[0])

    def _scan(self, run_id: str, after_seq: int, **filters: Any) -> Iterator[Node]:
        """Seq windows [lo, lo + ITER_CHUNK): range filters, no server-side sort, nothing held between windows."""
        lo, top = max(after_seq + 1, 0), None
        while True:
            where = node_filter(run_id, seq_from=lo, seq_to=lo + ITER_CHUNK, **filters)
            if where is None:
                return
            objs = self._call("list_nodes", self._fetch, self._nodes, where, limit=2 * ITER_CHUNK)
            if len(objs) == 2 * ITER_CHUNK:  # only if seqs were shared on a massive scale; never guess
                raise StoreError(f"run {run_id!r}: over {2 * ITER_CHUNK} nodes in seqs {lo}..; cannot list")
            yield from (
                self._node(p)
                for p in sorted((o.properties for o in objs), key=lambda p: (p["seq"], p["node_id"]))
            )
            lo += ITER_CHUNK
            if top is None or lo > top:
                top = self._top_seq(run_id, lo)  # only nodes at or above lo are sorted: cheap at any size
                if top is None:
                    return

    def list_nodes(
        self,
        run_id: str,
        *,
        stages: Sequence[Stage] | None = None,
        island: int | None = None,
        after_seq: int = -1,
        limit: int | None = None,
    ) -> list[Node]:
        if limit is not None and limit <= QUERY_LIMIT:
            where = node_filter(run_id, stages=stages, island=island, seq_from=max(after_seq + 1, 0))
            if where is None or limit <= 0:
                return []
            sort = [("seq", True), ("node_id", True)]
            objs = self._call("list_nodes", self._fetch, self._nodes, where, sort=sort, limit=limit)
            return [self._node(o.properties) for o in objs]
        return list(islice(self._scan(run_id, after_seq, stages=stages, island=island), limit))

    def iter_nodes(self, run_id: str, *, after_seq: int = -1) -> Iterator[Node]:
        return self._scan(run_id, after_seq)

    def count_nodes(self, run_id: str) -> dict[Stage, int]:
        from weaviate.classes.aggregate import GroupByAggregate

        res = self._call(
            "count_nodes",
            self._nodes.aggregate.over_all,
            filters=node_filter(run_id),
            group_by=GroupByAggregate(prop="stage"),
            total_count=True,
        )
        return {Stage(g.grouped_by.value): g.total_count for g in res.groups if g.total_count}

    def best_node(self, run_id: str) -> Node | None:
        where = all_of(node_filter(run_id, stages=[Stage.EVALUATED]), eq("scored", True))
        sort = [("score", False), ("seq", True), ("node_id", True)]
        objs = self._call("best_node", self._fetch, self._nodes, where, sort=sort, limit=1)
        return self._node(objs[0].properties) if objs else None

    def find_by_code_hash(self, run_id: str, code_hash: str) -> Node | None:
        where = all_of(node_filter(run_id), eq("code_hash", code_hash))
        objs = self._call("find_by_code_hash", self._fetch, self._nodes, where, sort=[("seq", True)], limit=1)
        return self._node(objs[0].properties) if objs else None

    # insights

    def add_insight(self, insight: Insight) -> Insight:
        self._writable("add_insight")
        data, blob = doc_columns(insight, "insight")
        props, vector = vector_props(blob)
        props |= {"insight_id": insight.id, "run_id": insight.run_id, "position": now_us(), "data": data}
        uid, what = self._uuid("insight", insight.id), f"insight {insight.id}"
        if self._call("add_insight", self._insights.data.exists, uid):
            raise StoreError(f"{what} already exists in tenant {self.tenant!r}; not added")
        self._call("add_insight", self._insert, self._insights, uid, props, vector, what)
        return insight

    @staticmethod
    def _insight(props: Props) -> Insight:
        return insight_from_row((props["data"], blob_of(props)))

    def list_insights(self, run_id: str) -> list[Insight]:
        order = ("position", "insight_id")
        return [
            self._insight(p)
            for p in self._pages("list_insights", self._insights, eq("run_id", run_id), order)
        ]

    def search_insights(self, run_id: str, vector: Sequence[float], k: int) -> list[tuple[Insight, float]]:
        order = ("position", "insight_id")
        hits = self._near("search_insights", self._insights, eq("run_id", run_id), vector, k, order)
        return [(self._insight(p), sim) for p, sim in hits]

    # cognition

    def add_cognition(self, entries: Sequence[CognitionEntry]) -> int:
        """All or nothing: every entry is checked before any is written, and a batch that Weaviate refuses in
        part is removed again, so one bad entry adds none of the batch."""
        self._writable("add_cognition")
        from weaviate.classes.data import DataObject

        prepared = []
        for entry in entries:
            data, blob = doc_columns(entry, "cognition entry")
            props, vector = vector_props(blob)
            props |= {"entry_id": entry.id, "collection_name": entry.collection, "data": data}
            props["content_key"] = content_key(entry)
            prepared.append((self._uuid("cognition", props["content_key"]), props, vector))
        if not prepared:
            return 0
        Filter = filter_class()
        uids = list({uid for uid, _, _ in prepared})
        taken_keys = self._stored_cognition(Filter.by_id().contains_any, uids, 1, "content_key")
        ids = list({p["entry_id"] for _, p, _ in prepared})
        taken_ids = self._stored_cognition(Filter.by_property("entry_id").contains_any, ids, 4, "entry_id")
        new: list[Any] = []  # weaviate's DataObjects
        base = now_us()
        for uid, props, vector in prepared:
            if props["content_key"] in taken_keys:
                continue
            if props["entry_id"] in taken_ids:
                raise StoreError(
                    f"cognition entry id {props['entry_id']} is taken by another entry; nothing added"
                )
            taken_keys.add(props["content_key"])
            taken_ids.add(props["entry_id"])
            props["position"] = base + len(new)
            new.append(DataObject(properties=props, uuid=uid, vector=vector))
        self._insert_all_or_nothing(new)
        return len(new)

    def _stored_cognition(self, where: Any, values: list[Any], per_value: int, prop: str) -> set[Any]:
        """`prop` of the stored entries matching `where(chunk)`, asked in chunks of BATCH values: one query's
        limit must stay within Weaviate's QUERY_MAXIMUM_RESULTS, which refuses the query otherwise."""
        found: set[Any] = set()
        for start in range(0, len(values), BATCH):
            chunk = values[start : start + BATCH]
            objs = self._call(
                "add_cognition",
                self._fetch,
                self._cognition,
                where(chunk),
                limit=per_value * len(chunk),
                props=[prop],
            )
            found |= {o.properties[prop] for o in objs}
        return found

    def _insert_all_or_nothing(self, objects: list[Any]) -> None:
        from weaviate.exceptions import WeaviateInsertManyAllFailedError

        written: list[Any] = []
        errors: list[str] = []
        for start in range(0, len(objects), BATCH):
            chunk = objects[start : start + BATCH]
            try:
                res = self._call("add_cognition", self._cognition.data.insert_many, chunk)
            except (StoreError, WeaviateInsertManyAllFailedError) as exc:
                errors.append(str(exc))
                break
            written += list(res.uuids.values())
            errors += [
                f"entry {chunk[i].properties['entry_id']}: {e.message}" for i, e in sorted(res.errors.items())
            ]
            if errors:
                break
        if errors:
            for uid in written:  # undo the part that was written; a failure here is reported, not hidden
                self._call("add_cognition (undoing a failed batch)", self._cognition.data.delete_by_id, uid)
            raise StoreError("Weaviate refused cognition entries; nothing added: " + "; ".join(errors[:5]))

    @staticmethod
    def _entry(props: Props) -> CognitionEntry:
        return cognition_from_row((props["data"], blob_of(props)))

    def list_cognition(self, collection: str) -> list[CognitionEntry]:
        rows = self._pages(
            "list_cognition", self._cognition, eq("collection_name", collection), ("position", "entry_id")
        )
        return [self._entry(p) for p in rows]

    def search_cognition(
        self, collection: str, vector: Sequence[float], k: int, *, min_score: float = -1.0
    ) -> list[tuple[CognitionEntry, float]]:
        where = eq("collection_name", collection)
        hits = self._near(
            "search_cognition", self._cognition, where, vector, k, ("position", "entry_id"), min_score
        )
        return [(self._entry(p), sim) for p, sim in hits]


__all__ = ["WeaviateSettings", "WeaviateStore", "node_filter", "node_props"]
