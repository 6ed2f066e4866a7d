"""WeaviateStore's plumbing: filters, how embeddings become properties, and one tenant's collection handles
with retried calls, paging and exact vector search. The Store methods themselves are in store/weaviate/__init__.py.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self, TypeVar

import numpy as np

from kubevolve.core.models import Stage
from kubevolve.store.base import StoreError
from kubevolve.store.codec import stage_values
from kubevolve.store.vectors import query_vector, rank
from kubevolve.store.weaviate.connection import (
    WeaviateSettings,
    check_tenant,
    connect,
    object_uuid,
    with_retries,
)
from kubevolve.store.weaviate.schema import (
    KINDS,
    VECTOR,
    check_readable,
    collection_name,
    ensure_schema,
    ensure_tenant,
)

PAGE = 1000  # objects per page when listing insights, cognition entries and runs
NEAR_MARGIN = 16  # extra candidates fetched beyond k, re-ranked exactly

_T = TypeVar("_T")
Props = dict[str, Any]


def filter_class() -> Any:
    """weaviate.classes.query.Filter, imported when first needed."""
    from weaviate.classes.query import Filter

    return Filter


def eq(prop: str, value: Any) -> Any:
    return filter_class().by_property(prop).equal(value)


def all_of(*filters: Any) -> Any:
    """The conjunction of the filters that are not None; None when none is left (match everything)."""
    present = [f for f in filters if f is not None]
    if len(present) <= 1:
        return present[0] if present else None
    return filter_class().all_of(present)


def node_filter(
    run_id: str,
    *,
    stages: Sequence[Stage] | None = None,
    island: int | None = None,
    seq_from: int | None = None,
    seq_to: int | None = None,
) -> Any:
    """Filter of one run's nodes; None when `stages` is empty (nothing can match)."""
    Filter = filter_class()
    parts = [eq("run_id", run_id)]
    if stages is not None:
        values = stage_values(stages)
        if not values:
            return None
        parts.append(
            Filter.any_of([eq("stage", v) for v in values]) if len(values) > 1 else eq("stage", values[0])
        )
    if island is not None:
        parts.append(eq("island", island))
    if seq_from is not None:
        parts.append(Filter.by_property("seq").greater_or_equal(seq_from))
    if seq_to is not None:
        parts.append(Filter.by_property("seq").less_than(seq_to))
    return all_of(*parts)


def vector_props(blob: bytes | None) -> tuple[Props, dict[str, list[float]] | None]:
    """(properties, vector to index) of an embedding; zero and empty vectors are stored but not indexed."""
    if blob is None:
        return {"vec_dim": 0, "vec_zero": False}, None
    arr = np.frombuffer(blob, dtype=np.float32)
    zero = not np.any(arr)
    props = {"vec_dim": int(arr.size), "vec_zero": zero, "embedding_f32": base64.b64encode(blob).decode()}
    return props, None if zero else {VECTOR: arr.tolist()}


def blob_of(props: Props) -> bytes | None:
    text = props.get("embedding_f32")
    return None if text is None else base64.b64decode(text)


def embedding_of(props: Props) -> bytes:
    """The embedding of an object a vector query selected by its vec_dim, which every embedded object has."""
    blob = blob_of(props)
    if blob is None:
        raise StoreError(f"an object with vec_dim={props.get('vec_dim')} has no embedding_f32")
    return blob


def now_us() -> int:
    return time.time_ns() // 1000  # below 2**53: exact in JSON


class TenantCollections:
    """One tenant's four collections on one Weaviate, and the retried calls every store method is built from.

    `read_only=True` creates and migrates nothing (the schema and the tenant must exist) and refuses every
    write with StoreError."""

    def __init__(
        self, url_or_settings: str | WeaviateSettings, tenant: str = "default", *, read_only: bool = False
    ) -> None:
        if isinstance(url_or_settings, WeaviateSettings):
            self.settings = url_or_settings.checked()
        else:
            self.settings = WeaviateSettings.from_url(url_or_settings)
        self.tenant = check_tenant(tenant)
        self.read_only = read_only
        self._closed = False
        self._add_lock = threading.Lock()
        self._seq_hint: dict[str, int] = {}
        self._client = connect(self.settings)
        try:
            prefix, where = self.settings.prefix, self.settings.url
            if read_only:
                self._call("opening the store", check_readable, self._client, prefix, where, self.tenant)
            else:
                self._call("opening the store", ensure_schema, self._client, prefix, where)
                self._call("creating the tenant", ensure_tenant, self._client, prefix, self.tenant)
            self._runs, self._nodes, self._insights, self._cognition = (self._handle(k) for k in KINDS)
        except BaseException:
            self._client.close()
            raise

    def _writable(self, action: str) -> None:
        if self.read_only:
            raise StoreError(f"{action}: {self!r} was opened read-only: it cannot write")

    def _handle(self, kind: str) -> Any:
        from weaviate.classes.config import ConsistencyLevel

        handle = self._client.collections.use(collection_name(self.settings.prefix, kind))
        handle = handle.with_tenant(self.tenant)
        if self.settings.consistency:
            handle = handle.with_consistency_level(ConsistencyLevel(self.settings.consistency.upper()))
        return handle

    def __repr__(self) -> str:
        where, prefix = self.settings.url, self.settings.prefix
        return f"{type(self).__name__}({where!r}, prefix={prefix!r}, tenant={self.tenant!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    # plumbing

    def _call(self, action: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        return with_retries(self.settings, action, lambda: fn(*args, **kwargs))

    def _uuid(self, kind: str, key: str) -> Any:
        return object_uuid(self.tenant, kind, key)

    @staticmethod
    def _fetch(
        handle: Any,
        filters: Any,
        *,
        sort: Sequence[tuple[str, bool]] = (),
        limit: int,
        props: Sequence[str] | None = None,
    ) -> list[Any]:
        from weaviate.classes.query import Sort

        sorting = None
        for prop, ascending in sort:
            sorting = (
                Sort.by_property(prop, ascending) if sorting is None else sorting.by_property(prop, ascending)
            )
        res = handle.query.fetch_objects(filters=filters, sort=sorting, limit=limit, return_properties=props)
        return res.objects

    def _get(self, handle: Any, action: str, uid: Any, props: Sequence[str] | None = None) -> Props | None:
        obj = self._call(action, handle.query.fetch_object_by_id, uid, return_properties=props)
        return None if obj is None else obj.properties

    def _insert(self, handle: Any, uid: Any, props: Props, vector: Any, what: str) -> None:
        """Insert a new object; if it exists, succeed only when it is this very write (a retried request)."""
        from weaviate.exceptions import UnexpectedStatusCodeError

        try:
            handle.data.insert(properties=props, uuid=uid, vector=vector)
        except UnexpectedStatusCodeError as exc:
            if "already exists" not in str(exc).lower():
                raise
            stored = handle.query.fetch_object_by_id(uid)
            if stored is None or stored.properties.get("data") != props.get("data"):
                raise StoreError(f"{what} already exists in tenant {self.tenant!r}; not added") from exc

    def _pages(self, action: str, handle: Any, filters: Any, order: tuple[str, str]) -> Iterator[Props]:
        """Every matching object sorted by `order` (position, id), in pages: keyset on position, de-duplicated
        at the page boundary (objects sharing one position must number fewer than a page)."""
        Filter = filter_class()
        last: Any = None
        seen: set[Any] = set()
        while True:
            after: Any = None if last is None else Filter.by_property(order[0]).greater_or_equal(last)
            objs = self._call(
                action,
                self._fetch,
                handle,
                all_of(filters, after),
                sort=[(o, True) for o in order],
                limit=PAGE,
            )
            fresh = [obj.properties for obj in objs if obj.uuid not in seen]
            yield from fresh
            if len(objs) < PAGE:
                return
            if not fresh:
                raise StoreError(f"{action}: over {PAGE} objects share one position; cannot page")
            last = objs[-1].properties[order[0]]
            seen = {o.uuid for o in objs if o.properties[order[0]] == last}

    def _near(
        self,
        action: str,
        handle: Any,
        filters: Any,
        vector: Sequence[float],
        k: int,
        order: tuple[str, str],
        min_score: float = -1.0,
    ) -> list[tuple[Props, float]]:
        """The k most similar objects, scored and ordered exactly as `vectors.rank` does (earliest on ties)."""
        query = query_vector(vector)
        if k <= 0 or filters is None:
            return []
        base = all_of(filters, eq("vec_dim", int(query.size)))
        sort = [(o, True) for o in order]
        if not np.any(query):  # every similarity is 0.0: the earliest k
            objs = self._call(action, self._fetch, handle, base, sort=sort, limit=k)
            return [(o.properties, 0.0) for o in objs] if min_score <= 0.0 else []
        objs = self._call(
            action,
            handle.query.near_vector,
            query.tolist(),
            target_vector=VECTOR,
            filters=base,
            limit=k + NEAR_MARGIN,
        ).objects
        found = {o.uuid: o.properties for o in objs}

        def ranked() -> list[tuple[Props, float]]:
            cands = sorted(found.values(), key=lambda p: tuple(p[o] for o in order))
            return [(cands[i], s) for i, s in rank(query, [embedding_of(p) for p in cands], k, min_score)]

        hits = ranked()
        if min_score <= 0.0 and (len(hits) < k or hits[-1][1] <= 0.0):  # zero vectors tie at 0.0
            zeros = self._call(
                action, self._fetch, handle, all_of(base, eq("vec_zero", True)), sort=sort, limit=k
            )
            if zeros:
                found.update({o.uuid: o.properties for o in zeros})
                hits = ranked()
        return hits
