"""Each lab's store key Secret (runtime/kubernetes/labkeys.py): issued once, only where the Secret was missing,
and never read back; on the strict kmock, with nothing the chart's RBAC does not grant."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kubevolve.runtime.kubernetes import STORE_KEY_SECRET, labkeys
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.kube import Kube
from kubevolve.testing import ApiError
from tests.kit.cluster import CLUSTER_ADMIN, OPERATOR
from tests.runtime.kubernetes.conftest import NAMESPACE

SECRETS = "v1/secrets"


class FakeKube:
    def __init__(self, existing: set[str]):
        self.existing, self.patches, self.creates = existing, [], []

    async def create_secret(self, namespace, body):
        self.creates.append((namespace, body))
        if namespace in self.existing:
            return False
        self.existing.add(namespace)
        return True

    async def patch_secret(self, namespace, name, patch):
        self.patches.append((namespace, name, patch))


class FakeLabKeys:
    issued: list[str] = []

    def __init__(self, url):
        self.url = url

    def issue(self, tenant):
        FakeLabKeys.issued.append(tenant)
        return f"key-of-{tenant}"

    def close(self):
        pass


async def test_a_missing_secret_gets_a_fresh_key_and_an_existing_one_is_left_alone(monkeypatch):
    monkeypatch.setattr(labkeys, "LabKeys", FakeLabKeys)
    FakeLabKeys.issued = []
    kube = FakeKube(existing={"lab-b"})
    ctx = SimpleNamespace(kube=kube, config=OperatorConfig(lab_keys=True), lab_keys=set())
    url = "weaviate://kv-kubevolve-weaviate.kubevolve-system.svc:8080?grpc=50051"
    assert labkeys.wanted(ctx, url) and not labkeys.wanted(ctx, "sqlite:///x.db")
    for _ in range(3):
        await labkeys.ensure_lab_key(ctx, "lab-a", url)
        await labkeys.ensure_lab_key(ctx, "lab-b", url)
    assert FakeLabKeys.issued == ["lab-a"]  # lab-b's Secret existed: its key is not rotated under its pods
    assert kube.patches == [("lab-a", "kubevolve-store", {"stringData": {"api-key": "key-of-lab-a"}})]
    assert len(kube.creates) == 2  # once per lab and process
    body = kube.creates[0][1]
    assert body["metadata"]["name"] == "kubevolve-store" and "data" not in body and "stringData" not in body


async def test_on_the_strict_kmock_the_chart_lets_the_operator_make_and_fill_a_key_and_not_read_it(
    kmock, api, monkeypatch
):
    """The same steps as the chart's operator (its ServiceAccount, the default chart's RBAC: bundled Weaviate
    with its key, so per-lab keys on), each request authorised and the Secret validated."""
    monkeypatch.setattr(labkeys, "LabKeys", FakeLabKeys)
    FakeLabKeys.issued = []
    url, token = str(kmock.url), kmock.policy.token_for(OPERATOR)
    root = api.as_token(kmock.policy.token_for(CLUSTER_ADMIN))
    mine = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": STORE_KEY_SECRET, "namespace": "lab-b"},
    }
    await root.create(SECRETS, mine)  # lab-b's admin replaced the key Secret: the operator leaves it be
    store = "weaviate://kv-kubevolve-weaviate.kubevolve-system.svc:8080?grpc=50051"
    for _ in range(2):  # a second operator process: the Secret exists, nothing is issued again
        kube = Kube.for_server(url, token)
        ctx = SimpleNamespace(kube=kube, config=OperatorConfig(lab_keys=True), lab_keys=set())
        await labkeys.ensure_lab_key(ctx, NAMESPACE, store)
        await labkeys.ensure_lab_key(ctx, "lab-b", store)
    assert FakeLabKeys.issued == [NAMESPACE]
    stored = await root.get(SECRETS, NAMESPACE, STORE_KEY_SECRET)
    assert stored and stored["stringData"] == {"api-key": f"key-of-{NAMESPACE}"}
    operator = api.as_token(token)
    with pytest.raises(ApiError) as err:
        await operator.get(SECRETS, NAMESPACE, STORE_KEY_SECRET)
    assert err.value.status == 403
    with pytest.raises(ApiError) as err:  # the patch grant names kubevolve-store alone
        await operator.patch(SECRETS, NAMESPACE, "llm-key", {"stringData": {"api-key": "x"}})
    assert err.value.status == 403
    assert [p.request for p in kmock.policy.take_problems()] == [
        f"get secrets '{STORE_KEY_SECRET}' in namespace '{NAMESPACE}'",
        f"patch secrets 'llm-key' in namespace '{NAMESPACE}'",
    ]
    for client in (root, operator):
        await client.close()
