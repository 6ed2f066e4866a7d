"""Each lab's store key Secret (runtime/kubernetes/labkeys.py): issued once, only where the Secret was missing,
and never read back."""

from __future__ import annotations

from types import SimpleNamespace

from kubevolve.runtime.kubernetes import labkeys
from kubevolve.runtime.kubernetes.config import OperatorConfig


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
