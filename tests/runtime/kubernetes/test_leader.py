"""Several operator replicas against kmock: exactly one reconciles (the holder of the Lease), another takes over
when it stops or dies, nothing runs twice, and the readiness probe shows a replica the API server refuses.

The replicas are the chart's: they authenticate as its ServiceAccount, elect with the Lease its Deployment
names, and every request (the Lease's too) is authorised against the RBAC it renders and validated, as in every
operator test (conftest.py).

kmock keeps one resourceVersion forever and takes every write; `LeasingEmulator` gives Leases what a real API
server gives every object (a new resourceVersion per write, 409 Conflict for a write based on an old one), so
two replicas racing for the Lease are decided as a real cluster decides them. It can also refuse (403) every
request on chosen resources, before the chart's RBAC is consulted, as a cluster without those grants would.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import aiohttp
import kmock
import pytest
from kmock._internal import enums
from kmock._internal.k8s import KubernetesError

from kubevolve.core.kinds import Role
from kubevolve.runtime.kubernetes.kube import Kube
from kubevolve.runtime.kubernetes.leader import LeaderElector, LeaseSettings
from kubevolve.runtime.kubernetes.main import RunningOperator, start_operator
from kubevolve.store import open_store
from kubevolve.testing import LEASES, RUNS, ValidatingEmulator
from kubevolve.testing.kubelet import Kubelet
from tests.kit.cluster import CLUSTER_ADMIN, OPERATOR, operator_lease
from tests.kit.toy_task import write_task
from tests.runtime.kubernetes.conftest import NAMESPACE, run_manifest, run_status, until

LEASE_NAMESPACE, LEASE_NAME = operator_lease()  # the chart's, whose Role allows that Lease alone


class LeasingEmulator(ValidatingEmulator):
    forbidden: set[str]
    _lease_lock: asyncio.Lock | None = None

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is not None and resource.plural in getattr(self, "forbidden", set()):
            raise KubernetesError(status=403, reason="Forbidden", message=f"{resource.plural} is forbidden")
        if resource is None or resource.plural != "leases":
            return await super()._handle(request)
        if self._lease_lock is None:
            self._lease_lock = asyncio.Lock()
        async with self._lease_lock:  # the check and the write as one step, as etcd makes them
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                request.data.setdefault("metadata", {})["resourceVersion"] = "1"
            elif request.action == enums.action.UPDATE and request.name and isinstance(request.data, dict):
                key = (resource, request.namespace, request.name)
                if key in self.objects and not self.objects[key].deleted:  # kmock's array has no .get()
                    stored = self.objects[key]
                    current = (stored.get("metadata") or {}).get("resourceVersion")
                    sent = (request.data.get("metadata") or {}).get("resourceVersion")
                    if sent != current:
                        raise KubernetesError(
                            status=409, reason="Conflict", message="the object has been modified"
                        )
                    request.data["metadata"]["resourceVersion"] = str(int(current) + 1)
            return await super()._handle(request)


@pytest.fixture
def kmock_options():
    return {"cls": LeasingEmulator}


@pytest.fixture
def leases(kmock, api):
    kmock.forbidden = set()
    return kmock


@pytest.fixture
async def root(kmock, api):
    """A cluster admin's client (to act as another replica would, or to clear a Lease)."""
    client = api.as_token(kmock.policy.token_for(CLUSTER_ADMIN))
    yield client
    await client.close()


@pytest.fixture
def lease_config(operator_config):
    return replace(
        operator_config,
        lease_name=LEASE_NAME,
        lease_namespace=LEASE_NAMESPACE,
        lease_seconds=3.0,
        lease_renew_seconds=2.0,
        lease_retry_seconds=0.2,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def probe(port: int) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as resp,
    ):
        return resp.status, await resp.json()


def operator_kube(kmock) -> Kube:
    return Kube.for_server(str(kmock.url), kmock.policy.token_for(OPERATOR))


async def replica(kmock, config, name: str, port: int | None = None) -> RunningOperator:
    url, token = str(kmock.url), kmock.policy.token_for(OPERATOR)
    login = __import__("kopf").ConnectionInfo(server=url, insecure=True, token=token)
    return await start_operator(
        config,
        Kube.for_server(url, token),
        login=login,
        wait=False,
        identity=name,
        probes=("127.0.0.1", port) if port else None,
    )


def holder(kmock) -> str | None:
    for (res, ns, name), obj in kmock.objects.items():
        if res.plural == "leases" and ns == LEASE_NAMESPACE and name == LEASE_NAME:
            return (obj.get("spec") or {}).get("holderIdentity")
    return None


@pytest.mark.parametrize("how", ["stopped", "crashed"])
async def test_one_replica_reconciles_and_another_takes_over(
    leases, api, lease_config, tmp_path, store_url, monkeypatch, how
):
    kmock = leases
    write_task(tmp_path / "toy")
    kubelet = Kubelet(api, mode="fake", concurrency=2)
    kubelet.start()
    ports = {"a": free_port(), "b": free_port(), "c": free_port()}
    replicas = {n: await replica(kmock, lease_config, n, ports[n]) for n in ("a", "b", "c")}
    try:
        await until(lambda: holder(kmock) in replicas, 20, "a replica to take the lease")
        first = holder(kmock)
        leader = replicas[first]
        await leader.wait_ready()
        await api.create(
            RUNS,
            run_manifest(
                "ha", "toy", budget={"maxCandidates": 8}, parallelism={"evaluators": 1, "proposers": 1}
            ),
        )
        await until(
            lambda: run_status(kmock, "ha").get("candidates", {}).get("evaluated", 0) >= 2, 60, "progress"
        )
        others = [r for n, r in replicas.items() if n != first]
        assert leader.ctx.stats.count > 0
        assert [r.ctx.stats.count for r in others] == [0, 0]  # the standbys reconcile nothing
        assert [r.leading for r in replicas.values()].count(True) == 1
        for n in replicas:  # standbys are ready too: they can take over (a PDB counts them)
            status, report = await probe(ports[n])
            assert status == 200, report
            assert report["role"] == ("leader" if n == first else "standby")

        if how == "crashed":  # it dies without giving the Lease up: the others wait until it expires
            monkeypatch.setattr(LeaderElector, "release", lambda self: asyncio.sleep(0))
        stopped_at = asyncio.get_running_loop().time()
        await leader.stop()
        await until(lambda: holder(kmock) not in (None, "", first), 20, "another replica to take over")
        waited = asyncio.get_running_loop().time() - stopped_at
        if how == "crashed":
            assert waited >= lease_config.lease_seconds - 0.5
        second = holder(kmock)
        await replicas[second].wait_ready()
        await until(lambda: run_status(kmock, "ha").get("phase") == "Succeeded", 90, "Succeeded")
        assert replicas[second].ctx.stats.count > 0
        third = next(r for n, r in replicas.items() if n not in (first, second))
        assert third.ctx.stats.count == 0 and not third.leading
    finally:
        for r in replicas.values():
            await r.stop()
        await kubelet.stop()

    # nothing ran twice: every Job started once, every step once per node, and no candidate beyond the budget
    assert kubelet.started and set(kubelet.started.values()) == {1}, kubelet.started
    assert set(kubelet.ran.values()) == {1}, kubelet.ran
    store = open_store(store_url, tenant=NAMESPACE)
    nodes = store.list_nodes("ha")
    assert len(nodes) == 8 == len({n.id for n in nodes})
    assert sum(1 for role, _ in kubelet.ran if role == Role.EVALUATE) == 8


async def test_only_one_of_two_replicas_starting_together_takes_the_lease(leases, root):
    """The race itself: both read "no holder" and write; the API server lets one write through."""
    settings = LeaseSettings(LEASE_NAME, LEASE_NAMESPACE, 3.0, 2.0, 0.2)
    for round_ in range(5):
        a, b = (LeaderElector(operator_kube(leases), settings, f"{n}{round_}") for n in "ab")
        results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
        assert sorted(results) == [False, True]
        # and a second round on an existing Lease: the holder renews, the other stays out
        results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
        assert results.count(True) == 1 and (a.leading, b.leading) == (results[0], results[1])
        await root.delete(LEASES, LEASE_NAMESPACE, LEASE_NAME)  # the next round starts from no Lease


async def test_a_replica_the_api_server_refuses_is_not_ready(leases, lease_config, operator_config):
    kmock = leases
    kmock.forbidden = {"leases"}  # no RBAC for its Lease: it can never lead, and says so
    port = free_port()
    standby = await replica(kmock, lease_config, "refused", port)
    try:
        await asyncio.sleep(1.0)
        status, report = await probe(port)
        assert status == 503 and report["role"] == "standby"
        assert any("403" in p for p in report["problems"]), report
    finally:
        await standby.stop()

    kmock.forbidden = {"jobs"}  # a single replica that may not watch Jobs: kopf retries and gets 403s
    port = free_port()
    single = await replica(kmock, operator_config, "alone", port)
    try:
        await single.wait_ready()
        await until(lambda: single.health.problems(), 30, "the refusal to show")
        status, report = await probe(port)
        assert status == 503 and report["role"] == "leader"
        assert any("APIForbiddenError" in p or "403" in p for p in report["problems"]), report
    finally:
        await single.stop()


async def test_a_leader_that_loses_the_lease_stops_reconciling(leases, root, lease_config):
    """Another replica holds the Lease now (the leader was cut off long enough for it to expire): the old
    leader sees it at its next renewal and stops kopf; `kubevolve operator` then exits 1."""
    kmock = leases
    leader = await replica(kmock, lease_config, "old")
    try:
        await leader.wait_ready()
        await until(lambda: holder(kmock) == "old", 10, "the lease")
        version = next(
            obj["metadata"]["resourceVersion"]
            for (res, _ns, _n), obj in kmock.objects.items()
            if res.plural == "leases"
        )
        await root.patch(
            LEASES,
            LEASE_NAMESPACE,
            LEASE_NAME,
            {"metadata": {"resourceVersion": version}, "spec": {"holderIdentity": "new"}},
        )
        await asyncio.to_thread(leader.thread.join, 20)
        assert not leader.thread.is_alive() and leader.error is None and leader.lost_lease
        assert holder(kmock) == "new"  # and it did not write the Lease back as it went
    finally:
        await leader.stop()
