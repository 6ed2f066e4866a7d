"""WeaviateStore's collections, their migrations, tenants, and the stored schema version.

Four multi-tenant collections hold the data (`<prefix>Run`, `<prefix>Node`, `<prefix>Insight`,
`<prefix>Cognition`); one tenant per Kubernetes namespace keeps each lab's objects in its own shard, so a
store opened for one tenant cannot address another's. `<prefix>Meta` (not multi-tenant) holds the schema
version. Indexed fields are their own properties; the rest of each model is JSON in `data`, and the exact
float32 embedding is base64 in `embedding_f32` beside the `embedding` vector that Weaviate indexes (the
index may normalise what it stores; the property gives back exactly what was written).

`ensure_schema` is safe to run from many pods at once and any number of times: it refuses a store written by
a newer kubevolve before touching anything, creates what is missing, adds properties a newer schema declares
to collections that lack them (additive migrations; Weaviate cannot drop or retype a property), and migrates
data a newer version reads differently (version 2: `fill_failure_kinds`).
"""

from __future__ import annotations

from typing import Any

from kubevolve.store.base import SCHEMA_VERSION, StoreError
from kubevolve.store.legacy_failures import FAILED_STAGES, with_legacy_failure
from kubevolve.store.weaviate.connection import object_uuid

KINDS = ("Run", "Node", "Insight", "Cognition")  # the multi-tenant collections
META = "Meta"
VECTOR = "embedding"  # the named vector of Node, Insight and Cognition
_VERSION_KEY = "schema_version"
FAILURE_KINDS_VERSION = 2  # from this version on, a node's JSON carries `failure`


def collection_name(prefix: str, kind: str) -> str:
    return f"{prefix}{kind}"


def _properties() -> dict[str, list[Any]]:
    from weaviate.classes.config import DataType, Property, Tokenization

    def key(name: str) -> Property:  # exact-match text: FIELD keeps case and the whole value as one token
        return Property(
            name=name,
            data_type=DataType.TEXT,
            tokenization=Tokenization.FIELD,
            index_filterable=True,
            index_searchable=False,
        )

    def blob(name: str) -> Property:  # stored, never indexed
        return Property(name=name, data_type=DataType.TEXT, index_filterable=False, index_searchable=False)

    def num(name: str, kind: DataType = DataType.INT, ranges: bool = False) -> Property:
        return Property(name=name, data_type=kind, index_filterable=True, index_range_filters=ranges)

    vector_fields = [num("vec_dim"), num("vec_zero", DataType.BOOL), blob("data"), blob("embedding_f32")]
    return {
        "Run": [key("run_id"), num("created_at", DataType.NUMBER), num("position"), blob("data")],
        "Node": [
            key("node_id"),
            key("run_id"),
            num("seq", ranges=True),
            key("stage"),
            num("score", DataType.NUMBER),
            num("scored", DataType.BOOL),
            num("island"),
            key("code_hash"),
            *vector_fields,
        ],
        "Insight": [key("insight_id"), key("run_id"), num("position", ranges=True), *vector_fields],
        "Cognition": [
            key("entry_id"),
            key("collection_name"),
            key("content_key"),
            num("position", ranges=True),
            *vector_fields,
        ],
        META: [key("key"), num("value")],
    }


def read_version(client: Any, prefix: str) -> int:
    """The schema version stored in this prefix's Meta collection; 0 when nothing was created yet."""
    name = collection_name(prefix, META)
    if not client.collections.exists(name):
        return 0
    obj = client.collections.use(name).query.fetch_object_by_id(object_uuid("", "meta", _VERSION_KEY))
    return int(obj.properties.get("value") or 0) if obj is not None else 0


def write_version(client: Any, prefix: str, version: int) -> None:
    """Record the schema version (tests use it to make a store look written by another kubevolve)."""
    from weaviate.exceptions import WeaviateBaseError

    meta = client.collections.use(collection_name(prefix, META))
    uid = object_uuid("", "meta", _VERSION_KEY)
    props = {"key": _VERSION_KEY, "value": version}
    if not meta.data.exists(uid):
        try:
            meta.data.insert(properties=props, uuid=uid)
            return
        except WeaviateBaseError:  # 422 "already exists" when another pod opening the store wrote it first
            if not meta.data.exists(uid):
                raise
    meta.data.replace(uuid=uid, properties=props)


def collection_config(kind: str, props: list[Any]) -> dict[str, Any]:
    """The keyword arguments of `client.collections.create` for the collection of one kind."""
    from weaviate.classes.config import Configure, VectorDistances

    index = Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
    return {
        "properties": props,
        # no vectorizer: every vector is ours (MiniLM); Run and Meta never get one
        "vector_config": Configure.Vectors.self_provided(name=VECTOR, vector_index_config=index),
        "multi_tenancy_config": (
            None
            if kind == META
            else Configure.multi_tenancy(
                enabled=True, auto_tenant_creation=False, auto_tenant_activation=True
            )
        ),
    }


def _create(client: Any, name: str, kind: str, props: list[Any]) -> None:
    from weaviate.exceptions import WeaviateBaseError

    try:
        client.collections.create(name, **collection_config(kind, props))
    except WeaviateBaseError:
        if not client.collections.exists(name):  # not a lost race with another pod creating it
            raise


def _add_missing_properties(client: Any, name: str, props: list[Any]) -> None:
    from weaviate.exceptions import WeaviateBaseError

    collection = client.collections.use(name)
    have = {p.name for p in collection.config.get().properties}
    for prop in props:
        if prop.name in have:
            continue
        try:
            collection.config.add_property(prop)
        except WeaviateBaseError:
            if prop.name not in {p.name for p in collection.config.get().properties}:
                raise


def fill_failure_kinds(client: Any, prefix: str) -> int:
    """Migration to version 2: give every failed node written by version 1 its `failure`, classified once from
    its message (`legacy_failures`; UNKNOWN where the message names no kind), in every tenant. Returns how
    many nodes changed. Each node is patched alone (its `data` property; the vector stays), and a node that
    already has the key is left alone, so pods migrating at once, or a migration cut short and run again,
    change nothing twice. A pod of version 1 still writing during the upgrade can overwrite a node it holds;
    that node then reads as having no kind (`progress.failure_kind`: UNKNOWN) until it is written again."""
    nodes = client.collections.use(collection_name(prefix, "Node"))
    changed = 0
    for tenant in nodes.tenants.get():
        scoped = nodes.with_tenant(tenant)
        for obj in scoped.iterator(return_properties=["stage", "data"]):
            if obj.properties.get("stage") not in FAILED_STAGES:
                continue
            filled = with_legacy_failure(obj.properties["data"])
            if filled is not None:
                scoped.data.update(uuid=obj.uuid, properties={"data": filled})
                changed += 1
    return changed


def ensure_schema(client: Any, prefix: str, where: str, current: int = SCHEMA_VERSION) -> None:
    """Create or migrate the collections up to `current`; refuse (touching nothing) a newer store."""
    version = read_version(client, prefix)
    if version > current:
        raise StoreError(
            f"the Weaviate store at {where} (prefix {prefix!r}) has schema version {version}, but this "
            f"kubevolve only understands up to {current}: upgrade kubevolve (the store is left untouched)"
        )
    for kind, props in _properties().items():
        name = collection_name(prefix, kind)
        if client.collections.exists(name):
            _add_missing_properties(client, name, props)
        else:
            _create(client, name, kind, props)
    if 0 < version < FAILURE_KINDS_VERSION <= current:
        fill_failure_kinds(client, prefix)
    if version < current:
        write_version(client, prefix, current)


def check_readable(client: Any, prefix: str, where: str, tenant: str, current: int = SCHEMA_VERSION) -> None:
    """What a read-only open needs, checked without writing: this kubevolve's schema, and the tenant."""
    version = read_version(client, prefix)
    if version != current:
        why = "newer" if version > current else "older, or nothing was stored yet"
        raise StoreError(
            f"the Weaviate store at {where} (prefix {prefix!r}) has schema version {version} ({why}); this "
            f"kubevolve reads version {current} read-only"
        )
    for kind in KINDS:
        name = collection_name(prefix, kind)
        if not client.collections.exists(name) or not client.collections.use(name).tenants.exists(tenant):
            raise StoreError(f"tenant {tenant!r} has nothing stored in the Weaviate store at {where} yet")


def ensure_tenant(client: Any, prefix: str, tenant: str) -> None:
    """Create the tenant in every multi-tenant collection that lacks it (a lab's first use of the store)."""
    from weaviate.classes.tenants import Tenant
    from weaviate.exceptions import WeaviateBaseError

    for kind in KINDS:
        tenants = client.collections.use(collection_name(prefix, kind)).tenants
        if tenants.exists(tenant):
            continue
        try:
            tenants.create([Tenant(name=tenant)])
        except WeaviateBaseError:
            if not tenants.exists(tenant):
                raise


def drop_collections(client: Any, prefix: str) -> None:
    """Delete every collection of a prefix, data included: for tests and benchmarks, never the operator."""
    for kind in (*KINDS, META):
        name = collection_name(prefix, kind)
        if client.collections.exists(name):
            client.collections.delete(name)
