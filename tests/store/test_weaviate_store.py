"""WeaviateStore without a Weaviate server: URL and settings parsing, object ids, retries, filters, how models
become properties, and a real refused connection. The behaviour against a server is the Store contract suite
(tests/test_store_contract.py), which runs on WeaviateStore whenever WEAVIATE_URL is set."""

from __future__ import annotations

import inspect
import json
import socket
import struct
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from weaviate import exceptions as wex
from weaviate.collections.filters import _FilterToGRPC

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import CognitionEntry, Insight, Node, RunRecord, Stage
from kubevolve.store import SCHEMA_VERSION, Store, StoreError, open_store
from kubevolve.store.codec import node_from_row
from kubevolve.store.weaviate import WeaviateStore, node_filter, node_props, schema
from kubevolve.store.weaviate import operations as weaviate_ops
from kubevolve.store.weaviate.connection import (
    WeaviateSettings,
    check_tenant,
    is_transient,
    object_uuid,
    with_retries,
)
from kubevolve.store.weaviate.operations import all_of, blob_of, eq, vector_props
from kubevolve.store.weaviate.schema import KINDS, META, VECTOR, _properties, collection_config
from tests.kit.version_1 import VERSION_1_MESSAGES, version_1_node

# settings from a URL


@pytest.mark.parametrize(
    ("url", "http", "grpc"),
    [
        ("weaviate://w:8080?grpc=50051&secure=false", ("w", 8080, False), ("w", 50051, False)),
        ("weaviate://w", ("w", 8080, False), ("w", 50051, False)),
        (
            "http://weaviate.db.svc?grpc_host=weaviate-grpc.db.svc",
            ("weaviate.db.svc", 80, False),
            ("weaviate-grpc.db.svc", 50051, False),
        ),
        ("https://w.example.com", ("w.example.com", 443, True), ("w.example.com", 50051, True)),
        (
            "https://w.example.com:8443/?grpc_port=443&grpc_secure=false",
            ("w.example.com", 8443, True),
            ("w.example.com", 443, False),
        ),
        ("weaviate://10.0.0.7:9000?secure=true", ("10.0.0.7", 9000, True), ("10.0.0.7", 50051, True)),
        (
            "https://weaviate.example.org:443?grpc=weaviate-grpc.example.org:443",
            ("weaviate.example.org", 443, True),
            ("weaviate-grpc.example.org", 443, True),
        ),
        ("weaviate://w?grpc=grpc.w", ("w", 8080, False), ("grpc.w", 50051, False)),
    ],
)
def test_urls_name_http_and_grpc_endpoints(url: str, http: tuple, grpc: tuple) -> None:
    s = WeaviateSettings.from_url(url)
    assert (s.http_host, s.http_port, s.http_secure) == http
    assert s.grpc_address == grpc


def test_url_options() -> None:
    s = WeaviateSettings.from_url(
        "weaviate://w?prefix=LabStore&timeout=5&retry=2.5&consistency=quorum&api_key_env=MY_KEY"
    )
    assert (s.prefix, s.timeout_s, s.retry_s, s.consistency, s.api_key_env) == (
        "LabStore",
        5.0,
        2.5,
        "quorum",
        "MY_KEY",
    )
    defaults = WeaviateSettings.from_url("weaviate://w")
    assert (defaults.prefix, defaults.consistency, defaults.api_key_env) == (
        "Kubevolve",
        None,
        "KUBEVOLVE_STORE_API_KEY",
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://admin:secret@w:8080", "credentials"),
        ("weaviate://w?api_key=abc", "must not be part of the URL"),
        ("weaviate://w?grcp=1", "unknown option"),
        ("weaviate://w?secure=maybe", "not a boolean"),
        ("weaviate://w?grpc=-1", "positive number"),
        ("weaviate://w?timeout=soon", "positive number"),
        ("weaviate://w?prefix=lower", "upper-case"),
        ("weaviate://w?prefix=Bad-Name", "upper-case"),
        ("weaviate://w?consistency=most", "one, quorum or all"),
        ("weaviate://w/v1", "path"),
        ("weaviate://:8080", "no host"),
        ("weaviate://w:99999", "out of range"),
        ("ftp://w", "not a Weaviate URL"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(StoreError, match=why):
        WeaviateSettings.from_url(url)


def test_the_api_key_comes_from_the_environment_and_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBEVOLVE_STORE_API_KEY", "WEAVIATE_API_KEY", "MY_KEY"):
        monkeypatch.delenv(name, raising=False)
    s = WeaviateSettings.from_url("https://w.example.com")
    assert s.api_key() is None
    monkeypatch.setenv("WEAVIATE_API_KEY", "fallback")
    assert s.api_key() == "fallback"
    monkeypatch.setenv("KUBEVOLVE_STORE_API_KEY", "from-the-secret")
    assert s.api_key() == "from-the-secret"
    monkeypatch.setenv("MY_KEY", "mine")
    assert WeaviateSettings.from_url("https://w.example.com?api_key_env=MY_KEY").api_key() == "mine"
    assert "from-the-secret" not in s.url and "from-the-secret" not in repr(s)


def test_open_store_routes_weaviate_urls_to_weaviate_store() -> None:
    # a bad option fails while parsing, before any connection: proof that the URL reached WeaviateStore
    for url in ("weaviate://w?nope=1", "http://w?nope=1", "https://w?nope=1"):
        with pytest.raises(StoreError, match="unknown option"):
            open_store(url)


# tenants and object ids


@pytest.mark.parametrize("tenant", ["default", "lab-a", "team_7", "a" * 63])
def test_every_kubernetes_namespace_is_a_valid_tenant(tenant: str) -> None:
    assert check_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", "lab a", "ns/x", "a" * 65, "lab.a"])
def test_invalid_tenants_are_refused(tenant: str) -> None:
    with pytest.raises(StoreError, match="tenant"):
        check_tenant(tenant)


def test_object_ids_are_deterministic_per_tenant_and_kind() -> None:
    a = object_uuid("lab-a", "node", "0123456789abcdef")
    assert a == object_uuid("lab-a", "node", "0123456789abcdef")  # a retry writes the same object
    assert a != object_uuid("lab-b", "node", "0123456789abcdef")
    assert a != object_uuid("lab-a", "insight", "0123456789abcdef")
    # pinned: changing the namespace or the key layout would orphan every stored object
    assert str(a) == "9943e77e-3b89-5824-8ef6-9915e3dde84c" and a.version == 5


# retries


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


_RPC_ERROR = (
    "<_InactiveRpcError of RPC that terminated with:\n\tstatus = StatusCode.{code}\n"
    '\tdetails = "failed"\n\tdebug_error_string = "UNKNOWN"\n>'
)


def _status_error(code: int) -> wex.UnexpectedStatusCodeError:
    response = httpx.Response(
        code, json={"error": [{"message": "boom"}]}, request=httpx.Request("GET", "http://w")
    )
    return wex.UnexpectedStatusCodeError("request", response)


def test_transient_failures_are_retried_until_they_pass() -> None:
    settings, clock, calls = WeaviateSettings.from_url("weaviate://w?retry=10"), FakeClock(), []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise wex.WeaviateConnectionError("refused")
        return "ok"

    assert with_retries(settings, "add_node", flaky, sleep=clock.sleep, clock=clock) == "ok"
    assert len(calls) == 4 and len(clock.sleeps) == 3
    assert all(0 < s <= 0.4 for s in clock.sleeps)  # 0.1 s doubling, jittered down to half


def test_retries_stop_at_the_budget_with_a_clear_error() -> None:
    settings, clock = WeaviateSettings.from_url("weaviate://w:8080?retry=3"), FakeClock()

    def down() -> None:
        raise wex.WeaviateTimeoutError("read timed out")

    with pytest.raises(
        StoreError, match=r"add_node failed: Weaviate at http://w:8080 .*did not answer"
    ) as err:
        with_retries(settings, "add_node", down, sleep=clock.sleep, clock=clock)
    assert clock.now == pytest.approx(3.0) and "nothing was lost" in str(err.value)
    assert isinstance(err.value.__cause__, wex.WeaviateTimeoutError)


def test_permanent_errors_are_not_retried() -> None:
    settings, clock, calls = WeaviateSettings.from_url("weaviate://w"), FakeClock(), []

    def refused() -> None:
        calls.append(1)
        raise _status_error(422)

    with pytest.raises(StoreError, match="get_run failed on Weaviate at"):
        with_retries(settings, "get_run", refused, sleep=clock.sleep, clock=clock)
    assert calls == [1] and clock.sleeps == []
    with pytest.raises(ValueError):  # not a Weaviate error: a bug, surfaced as is
        with_retries(settings, "x", lambda: int("x"), sleep=clock.sleep, clock=clock)
    store_error = StoreError("node x already exists")
    with pytest.raises(StoreError) as err:
        with_retries(
            settings, "x", lambda: (_ for _ in ()).throw(store_error), sleep=clock.sleep, clock=clock
        )
    assert err.value is store_error


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (wex.WeaviateConnectionError("x"), True),
        (wex.WeaviateTimeoutError("x"), True),
        (wex.WeaviateStartUpError("Could not connect to Weaviate: refused."), True),
        (wex.WeaviateStartUpError("Weaviate version 1.20.0 is not supported."), False),
        (wex.WeaviateQueryError("StatusCode.UNAVAILABLE: connection reset", "GRPC search"), True),
        (wex.WeaviateQueryError("no such property 'sq'", "GRPC search"), False),
        # as weaviate/connect/v4.py raises them: a search or a batch insert past its deadline carries only the
        # gRPC details; an aggregation carries the whole RpcError; UNAVAILABLE comes after the client's retries
        (wex.WeaviateQueryError("Deadline Exceeded", "GRPC search"), True),
        (wex.WeaviateBatchError("Deadline Exceeded"), True),
        (wex.WeaviateQueryError(_RPC_ERROR.format(code="DEADLINE_EXCEEDED"), "GRPC search"), True),
        (
            wex.WeaviateQueryError(
                str(wex.WeaviateRetryError(_RPC_ERROR.format(code="UNAVAILABLE"), 5)), "x"
            ),
            True,
        ),
        (wex.WeaviateRetryError(_RPC_ERROR.format(code="UNAVAILABLE"), 3), True),  # a batch insert's
        (wex.WeaviateBatchError("vector lengths don't match"), False),
        (httpx.ConnectError("refused"), True),
        (_status_error(503), True),
        (_status_error(429), True),
        (_status_error(401), False),
        (_status_error(422), False),
        (ValueError("x"), False),
    ],
)
def test_what_counts_as_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_becomes_a_store_error_naming_the_url_within_the_budget() -> None:
    http, grpc = _closed_port(), _closed_port()
    start = time.monotonic()
    with pytest.raises(StoreError) as err:
        open_store(f"weaviate://127.0.0.1:{http}?grpc={grpc}&retry=1.5", tenant="lab-a")
    elapsed = time.monotonic() - start
    assert f"127.0.0.1:{http}" in str(err.value) and "did not answer" in str(err.value)
    assert elapsed < 1.5 + 5.0  # the budget, plus one connection attempt's own time


# filters and properties


def tree(f) -> tuple:
    """A filter as nested tuples: (operator, [children]) or (operator, property, value)."""
    if hasattr(f, "filters"):
        return (f.operator.value, [tree(c) for c in f.filters])
    return (f.operator.value, f.target, f.value)


def test_node_filters() -> None:
    assert tree(node_filter("r1")) == ("Equal", "run_id", "r1")
    f = node_filter("r1", stages=[Stage.EVALUATED, "proposed"], island=2, seq_from=3, seq_to=9)
    assert tree(f) == (
        "And",
        [
            ("Equal", "run_id", "r1"),
            ("Or", [("Equal", "stage", "evaluated"), ("Equal", "stage", "proposed")]),
            ("Equal", "island", 2),
            ("GreaterThanEqual", "seq", 3),
            ("LessThan", "seq", 9),
        ],
    )
    assert tree(node_filter("r1", stages=[Stage.FAILED_QUICK])) == (
        "And",
        [("Equal", "run_id", "r1"), ("Equal", "stage", "failed_quick")],
    )
    assert node_filter("r1", stages=[]) is None  # matches nothing: callers return [] without a query
    with pytest.raises(StoreError, match="unknown stage"):
        node_filter("r1", stages=["bogus"])  # type: ignore[list-item]
    assert _FilterToGRPC.convert(f).operator  # what goes over the wire is well formed
    assert all_of(None, None) is None and tree(all_of(None, eq("a", 1))) == ("Equal", "a", 1)


def test_vectors_become_exact_properties_and_index_only_nonzero_ones() -> None:
    blob = struct.pack("<3f", 0.5, -0.25, 1.0)
    props, vector = vector_props(blob)
    assert props["vec_dim"] == 3 and props["vec_zero"] is False and blob_of(props) == blob
    assert vector == {VECTOR: [0.5, -0.25, 1.0]}
    props, vector = vector_props(struct.pack("<2f", 0.0, 0.0))
    assert vector is None and props["vec_zero"] is True and props["vec_dim"] == 2  # cosine is undefined for 0
    props, vector = vector_props(None)
    assert vector is None and props["vec_dim"] == 0 and blob_of(props) is None


def test_node_properties_match_the_schema_and_refuse_bad_nodes_before_writing() -> None:
    node = Node(run_id="r1", code="x = 1", stage=Stage.EVALUATED, score=float("inf"), embedding=[1.0, 0.0])
    props, vector = node_props(node, 7)
    schema = {p.name for p in _properties()["Node"]}
    assert set(props) <= schema
    assert (props["seq"], props["stage"], props["scored"], props["score"]) == (7, "evaluated", True, 1.7e308)
    assert props["code_hash"] == node.code_hash and vector == {VECTOR: [1.0, 0.0]}
    unscored, _ = node_props(Node(run_id="r1", code="y"), 0)
    assert unscored["scored"] is False and "score" not in unscored
    with pytest.raises(StoreError, match="NaN"):
        node_props(Node(run_id="r1", code="z", embedding=[float("nan")]), 0)


def test_schema_declares_indexed_keys_and_unindexed_payloads() -> None:
    props = {kind: {p.name: p for p in plist} for kind, plist in _properties().items()}
    for kind in ("Node", "Insight", "Cognition"):
        assert not props[kind]["data"].indexFilterable and not props[kind]["embedding_f32"].indexSearchable
    assert props["Node"]["seq"].indexRangeFilters and props["Node"]["node_id"].tokenization.value == "field"
    for p in (p for plist in props.values() for p in plist.values()):
        p._to_dict()  # each is a valid property definition for the REST schema call


def test_weaviate_store_has_every_store_method_with_the_same_signature() -> None:
    for name, member in inspect.getmembers(Store, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = getattr(WeaviateStore, name)
        assert inspect.signature(ours).parameters.keys() == inspect.signature(member).parameters.keys(), name


# the collections as Weaviate receives them


def test_collections_are_created_multi_tenant_with_our_own_named_vector() -> None:
    from weaviate.collections.classes.config import _CollectionConfigCreate
    from weaviate.collections.collections.sync import _Collections

    bodies = {}
    for kind, props in _properties().items():
        config = collection_config(kind, props)
        inspect.signature(_Collections.create).bind(None, f"Kubevolve{kind}", **config)  # its keywords
        body = bodies[kind] = _CollectionConfigCreate(name=f"Kubevolve{kind}", **config)._to_dict()
        assert body["class"] == f"Kubevolve{kind}"
        assert body["vectorConfig"] == {
            VECTOR: {
                "vectorizer": {"none": {}},  # self-provided: no module vectorizes anything
                "vectorIndexType": "hnsw",
                "vectorIndexConfig": {"distance": "cosine"},
            }
        }
        assert "vectorizer" not in body and "vectorIndexConfig" not in body  # no legacy unnamed vector
        if kind == META:
            assert "multiTenancyConfig" not in body
        else:
            assert kind in KINDS and body["multiTenancyConfig"] == {
                "enabled": True,
                "autoTenantCreation": False,  # a tenant is created on purpose (ensure_tenant), never by a typo
                "autoTenantActivation": True,
            }
        assert [p["name"] for p in body["properties"]] == [p.name for p in props]
    node = {p["name"]: p for p in bodies["Node"]["properties"]}  # as POST /v1/schema carries them
    assert (node["run_id"]["dataType"], node["run_id"]["tokenization"]) == (["text"], "field")
    assert (node["run_id"]["indexFilterable"], node["run_id"]["indexSearchable"]) == (True, False)
    assert (node["seq"]["dataType"], node["seq"]["indexRangeFilters"]) == (["int"], True)
    assert (node["score"]["dataType"], node["scored"]["dataType"]) == (["number"], ["boolean"])
    assert not node["data"]["indexFilterable"] and not node["data"]["indexSearchable"]


# every call as far as the installed client goes without a server


def _unconnected_client(version: str):
    """A real WeaviateClient that was never connected: each call builds and checks its whole request, then
    stops with WeaviateClosedClientError where it would go on the network. `version` is what connect() would
    have read from the server's /v1/meta; some calls choose their protocol by it."""
    import weaviate
    from weaviate.connect.base import ConnectionParams
    from weaviate.util import _ServerVersion

    http, grpc = _closed_port(), _closed_port()
    params = ConnectionParams.from_params(
        http_host="127.0.0.1",
        http_port=http,
        http_secure=False,
        grpc_host="127.0.0.1",
        grpc_port=grpc,
        grpc_secure=False,
    )
    client = weaviate.WeaviateClient(params, skip_init_checks=True)
    client._connection._weaviate_version = _ServerVersion.from_string(version)
    return client


def _fails_only_at_the_network(call) -> None:
    """Not a TypeError, nor the client refusing an argument: the request was complete when it stopped."""
    with pytest.raises((StoreError, wex.WeaviateClosedClientError)) as err:
        call()
    stop = err.value if isinstance(err.value, wex.WeaviateClosedClientError) else err.value.__cause__
    closed = str(wex.WeaviateClosedClientError())
    assert isinstance(stop, wex.WeaviateClosedClientError) or closed in str(err.value), repr(err.value)


@pytest.mark.parametrize("version", ["1.27.0", "1.32.0"])  # aggregations: GraphQL before 1.29, gRPC after
def test_every_store_call_is_accepted_by_the_installed_client(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from weaviate.classes.config import ConsistencyLevel
    from weaviate.classes.data import DataObject

    client = _unconnected_client(version)
    migrating = client.collections.use("KubevolveNode").with_tenant("lab-a")
    for fails in (
        lambda: schema.ensure_schema(client, "Kubevolve", "w"),
        lambda: schema.ensure_tenant(client, "Kubevolve", "lab-a"),
        lambda: schema._create(client, "KubevolveNode", "Node", _properties()["Node"]),
        lambda: schema._add_missing_properties(client, "KubevolveNode", _properties()["Node"]),
        lambda: schema.read_version(client, "Kubevolve"),
        lambda: schema.check_readable(client, "Kubevolve", "w", "lab-a"),
        lambda: schema.write_version(client, "Kubevolve", 1),
        lambda: schema.drop_collections(client, "Kubevolve"),
        lambda: schema.fill_failure_kinds(client, "Kubevolve"),
        # the calls fill_failure_kinds makes once the server has listed the tenants
        lambda: next(iter(migrating.iterator(return_properties=["stage", "data"]))),
        lambda: migrating.data.update(uuid=object_uuid("lab-a", "node", "n1"), properties={"data": "{}"}),
    ):
        _fails_only_at_the_network(fails)
    monkeypatch.setattr(weaviate_ops, "connect", lambda settings: client)
    monkeypatch.setattr(weaviate_ops, "ensure_schema", lambda *args: None)  # both checked just above
    monkeypatch.setattr(weaviate_ops, "ensure_tenant", lambda *args: None)
    store = WeaviateStore("weaviate://127.0.0.1:1?consistency=quorum&retry=1", tenant="lab-a")
    try:
        assert (store._nodes.name, store._nodes.tenant) == ("KubevolveNode", "lab-a")
        assert store._cognition.consistency_level == ConsistencyLevel.QUORUM
        node = Node(run_id="r1", code="x = 1", stage=Stage.EVALUATED, score=0.5, embedding=[1.0, 0.0])
        uid = object_uuid("lab-a", "node", node.id)
        props, vector = node_props(node, 3)
        entry = CognitionEntry(collection="c", title="t", text="x", source="s", embedding=[0.0, 1.0])
        for call in (
            lambda: store.put_run(RunRecord(id="r1", task="t", spec={})),
            lambda: store.get_run("r1"),
            lambda: store.list_runs(),
            lambda: store.add_node(node),
            lambda: store.update_node(node),
            lambda: store.get_node(node.id),
            lambda: store.list_nodes("r1", stages=[Stage.EVALUATED, Stage.PROPOSED], island=0, limit=5),
            lambda: store.list_nodes("r1", after_seq=3),
            lambda: list(store.iter_nodes("r1")),
            lambda: store.count_nodes("r1"),
            lambda: store.best_node("r1"),
            lambda: store.find_by_code_hash("r1", node.code_hash),
            lambda: store.add_insight(Insight(run_id="r1", text="i", embedding=[1.0, 0.0])),
            lambda: store.list_insights("r1"),
            lambda: store.search_insights("r1", [1.0, 0.0], 2),
            lambda: store.add_cognition([entry]),
            lambda: store.list_cognition("c"),
            lambda: store.search_cognition("c", [0.0, 1.0], 2, min_score=0.1),
            # the calls that the ones above reach only after a server has answered
            lambda: store._call("add_node", store._insert, store._nodes, uid, props, vector, "node"),
            lambda: store._call(
                "add_node", store._nodes.data.replace, uuid=uid, properties=props, vector=vector
            ),
            lambda: store._call("add_node", store._nodes.data.delete_by_id, uid),
            lambda: store._free_seq("r1", uid),
            lambda: store._top_seq("r1", 5),
            lambda: store._call("add_node", store._held_by_another, "r1", 3, uid),
            lambda: store._insert_all_or_nothing([DataObject(properties=props, uuid=uid, vector=vector)]),
        ):
            _fails_only_at_the_network(call)
    finally:
        store.close()


# migrating a store version 1 wrote, against an in-memory stand-in for the calls the schema code makes


class _Data:
    def __init__(self, objects: dict[Any, dict[str, Any]]):
        self.objects = objects
        self.updates = 0

    def exists(self, uuid: Any) -> bool:
        return uuid in self.objects

    def insert(self, properties: dict[str, Any], uuid: Any) -> None:
        self.objects[uuid] = dict(properties)

    def replace(self, uuid: Any, properties: dict[str, Any]) -> None:
        self.objects[uuid] = dict(properties)

    def update(self, uuid: Any, properties: dict[str, Any]) -> None:  # a PATCH: merges, keeps the vector
        self.objects[uuid] |= properties
        self.updates += 1


class _Collection:
    """One collection: properties, and objects per tenant (None for a collection without tenants)."""

    def __init__(self, props: list[Any]):
        self.props = [p.name for p in props]
        self.objects: dict[str | None, dict[Any, dict[str, Any]]] = {None: {}}
        self.scoped: dict[str | None, _Data] = {}
        self.config = SimpleNamespace(
            get=lambda: SimpleNamespace(properties=[SimpleNamespace(name=n) for n in self.props]),
            add_property=lambda prop: self.props.append(prop.name),
        )
        self.tenants = SimpleNamespace(get=lambda: {t: SimpleNamespace(name=t) for t in self.objects if t})
        self.data = self._data(None)
        self.query = SimpleNamespace(
            fetch_object_by_id=lambda uid: (
                SimpleNamespace(properties=self.objects[None][uid]) if uid in self.objects[None] else None
            )
        )

    def _data(self, tenant: str | None) -> _Data:
        if tenant not in self.scoped:
            self.scoped[tenant] = _Data(self.objects.setdefault(tenant, {}))
        return self.scoped[tenant]

    def with_tenant(self, tenant: str) -> SimpleNamespace:
        data = self._data(tenant)

        def iterator(return_properties: list[str]):
            for uid, props in list(data.objects.items()):
                yield SimpleNamespace(uuid=uid, properties={k: props[k] for k in return_properties})

        return SimpleNamespace(data=data, iterator=iterator)


class _Client:
    def __init__(self) -> None:
        self.made: dict[str, _Collection] = {}
        self.collections = SimpleNamespace(
            exists=lambda name: name in self.made,
            use=lambda name: self.made[name],
            create=lambda name, **config: self.made.setdefault(name, _Collection(config["properties"])),
        )


def test_opening_a_version_1_weaviate_store_gives_its_failed_nodes_their_kinds_once() -> None:
    client = _Client()
    schema.ensure_schema(client, "Kubevolve", "w", current=1)  # the collections as version 1 made them
    assert schema.read_version(client, "Kubevolve") == 1
    nodes = client.collections.use("KubevolveNode")
    expected = {}
    for tenant in ("lab-a", "lab-b"):
        stored = nodes.with_tenant(tenant).data
        for i, (stage, error, kind) in enumerate(VERSION_1_MESSAGES):
            node = version_1_node(f"{tenant}-{i}", stage, error)
            stored.insert({"stage": str(stage), "seq": i, "data": json.dumps(node)}, uuid=node["id"])
            expected[tenant, node["id"]] = kind
    written = {key: dict(nodes.objects[key[0]][key[1]]) for key in expected}

    schema.ensure_schema(client, "Kubevolve", "w")  # this kubevolve opens it
    assert schema.read_version(client, "Kubevolve") == SCHEMA_VERSION
    for (tenant, uid), kind in expected.items():
        props = nodes.objects[tenant][uid]
        assert node_from_row((props["seq"], props["data"], None)).failure is kind, (uid, props)
        if kind is None:  # evaluated and proposed nodes are not written at all
            assert props == written[tenant, uid]
    failed = sum(1 for (tenant, _), kind in expected.items() if kind is not None and tenant == "lab-a")
    assert nodes.scoped["lab-a"].updates == failed and nodes.scoped["lab-b"].updates == failed

    schema.ensure_schema(client, "Kubevolve", "w")  # version 2 now: nothing is migrated again
    assert schema.fill_failure_kinds(client, "Kubevolve") == 0  # and nor would a second run change anything
    assert nodes.scoped["lab-a"].updates == failed


def test_a_new_weaviate_store_has_nothing_to_migrate(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_migration(*args: Any) -> int:
        raise AssertionError("a store created by this kubevolve was migrated")

    monkeypatch.setattr(schema, "fill_failure_kinds", no_migration)
    client = _Client()
    schema.ensure_schema(client, "Kubevolve", "w")
    schema.ensure_schema(client, "Kubevolve", "w")
    assert schema.read_version(client, "Kubevolve") == SCHEMA_VERSION
    node = Node(run_id="r", code="x", stage=Stage.FAILED_QUICK, failure=FailureKind.TIMEOUT, error="t")
    props, _ = node_props(node, 0)
    assert node_from_row((0, props["data"], None)).failure is FailureKind.TIMEOUT


def test_a_read_only_store_creates_nothing_and_refuses_writes_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = _unconnected_client("1.32.0")
    checked = []

    def must_not_write(*args):
        raise AssertionError("a read-only open created or migrated something")

    monkeypatch.setattr(weaviate_ops, "connect", lambda settings: client)
    monkeypatch.setattr(weaviate_ops, "ensure_schema", must_not_write)
    monkeypatch.setattr(weaviate_ops, "ensure_tenant", must_not_write)
    monkeypatch.setattr(weaviate_ops, "check_readable", lambda *args: checked.append(args[1:]))
    store = open_store("weaviate://127.0.0.1:1?retry=1", tenant="lab-a", read_only=True)
    try:
        assert checked == [("Kubevolve", store.settings.url, "lab-a")]
        node = Node(run_id="r1", code="x = 1")
        entry = CognitionEntry(collection="c", title="t", text="x", source="s")
        for write in (
            lambda: store.put_run(RunRecord(id="r1", task="t", spec={})),
            lambda: store.add_node(node),
            lambda: store.update_node(node),
            lambda: store.add_insight(Insight(run_id="r1", text="i")),
            lambda: store.add_cognition([entry]),
        ):
            with pytest.raises(StoreError, match="read-only"):  # not the closed client: no request was built
                write()
        _fails_only_at_the_network(lambda: store.get_run("r1"))  # reads go ahead
    finally:
        store.close()
