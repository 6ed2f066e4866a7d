"""Fixtures for the operator tests: kmock's emulated API server, as strict as a real one where it matters
(the chart's RBAC for every request, every object validated: tests/kit/cluster.py), the operator running in
the test's event loop as the chart's ServiceAccount, the lab `lab-a` onboarded as `kubevolve lab create` does,
and a kubelet stand-in that runs the Jobs.

The test itself acts as the lab's admin (alice). A request the API server refuses (403, 422) or warns about
(a deprecated API) fails the test at teardown, with who sent what, even where the client only logged it."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import kopf
import pytest

from kubevolve.runtime.kubernetes import API_VERSION, KIND, ROLE_LABEL
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.kube import Kube
from kubevolve.runtime.kubernetes.main import RunningOperator, start_operator
from kubevolve.testing import (
    LAB_RESOURCES,
    RUNS,
    Api,
    ValidatingEmulator,
    declare_lab_resources,
    declare_resources,
    live_objects,
)
from kubevolve.testing.kubelet import Kubelet
from kubevolve.testing.strict import ApiServerPolicy
from tests.kit.cluster import (
    CLUSTER_ADMIN,
    LAB_ADMIN,
    OPERATOR,
    lab_objects,
    record_rbac_usage,
    strict_policy,
    values_for,
)

NAMESPACE = "lab-a"


@pytest.fixture
def kmock_options():
    return {"cls": ValidatingEmulator}


@pytest.fixture
def chart_values(operator_config: OperatorConfig) -> dict:
    """The chart's values on this pretend cluster: those that install an operator like `operator_config`."""
    return values_for(operator_config)


@pytest.fixture
async def api(kmock, chart_values):
    """The lab admin's client; the lab is onboarded first (as a cluster admin applies `lab create`'s YAML)."""
    declare_resources(kmock)
    declare_lab_resources(kmock)
    policy: ApiServerPolicy = strict_policy(chart_values)
    kmock.policy = policy
    admin = Api(str(kmock.url), policy.token_for(CLUSTER_ADMIN))
    for doc in lab_objects(NAMESPACE, cluster_queue=None):
        await admin.create(_resource_of(doc), doc)
    await admin.close()
    client = Api(str(kmock.url), policy.token_for(LAB_ADMIN))
    yield client
    await client.close()
    record_rbac_usage(policy)
    assert not policy.problems(), policy.report()


def _resource_of(doc: dict) -> str:
    (resource,) = [
        r
        for r, kind in LAB_RESOURCES.items()
        if kind == doc["kind"] and r.startswith(doc["apiVersion"] + "/")
    ]
    return resource


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cluster-store.db'}"


@pytest.fixture
def operator_config(tmp_path: Path, store_url: str) -> OperatorConfig:
    return OperatorConfig(
        image="kubevolve:test",
        store_url=store_url,
        task_root=str(tmp_path),
        resync_seconds=2.0,
        idle_resync_seconds=5.0,
        trainjobs=True,
        step_service_account="kubevolve-step",  # the chart's default
    )


@pytest.fixture
def readable_task_root():
    """A task root every uid can read: evaluation pods' containers run as their own uids (Kubelet's
    `identities`), and pytest's tmp_path is root's alone."""
    root = tempfile.mkdtemp(prefix="kv-tasks-")
    os.chmod(root, 0o755)
    yield Path(root)
    shutil.rmtree(root, ignore_errors=True)


class OperatorHandle:
    """Start and stop (restart) the real kopf operator against kmock."""

    def __init__(self, kmock, config: OperatorConfig):
        self.kmock, self.config = kmock, config
        self.running: RunningOperator | None = None
        self.starts = 0

    async def start(self) -> RunningOperator:
        url, token = str(self.kmock.url), self.kmock.policy.token_for(OPERATOR)  # the chart's ServiceAccount
        login = kopf.ConnectionInfo(server=url, insecure=True, token=token)
        kube = Kube.for_server(url, token)
        self.running = await start_operator(self.config, kube, login=login, namespaces=self.config.namespaces)
        self.starts += 1
        return self.running

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()
            self.running = None


@pytest.fixture
async def operator(kmock, api, operator_config):
    handle = OperatorHandle(kmock, operator_config)
    yield handle
    await handle.stop()


def run_manifest(name: str, task: str, **spec) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": str(uuid.uuid4()), "generation": 1},
        "spec": {"task": task, **spec},
    }


async def until(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def is_evaluation(job: dict) -> bool:
    return job["metadata"]["labels"].get(ROLE_LABEL) == "evaluate"


async def run_to_success(kmock, api, operator, manifest: dict, timeout: float) -> Kubelet:
    """Start the operator and run `manifest` on a kubelet that runs processes, an evaluation pod's containers
    as their own users where it can, until the run Succeeded; a timeout says what the pods printed. Returns
    the stopped kubelet, whose records the test reads."""
    kubelet = Kubelet(api, mode="process", concurrency=2, identities=is_evaluation)
    kubelet.start()
    await operator.start()
    await api.create(RUNS, manifest)
    name = manifest["metadata"]["name"]
    try:
        await until(lambda: run_status(kmock, name).get("phase") == "Succeeded", timeout, "Succeeded")
    except AssertionError as err:
        raise AssertionError(f"{err}; the pods said: {kubelet.outputs}") from err
    finally:
        await kubelet.stop()
    return kubelet


def run_object(kmock, name: str) -> dict | None:
    for obj in live_objects(kmock, RUNS, NAMESPACE):
        if obj["metadata"]["name"] == name:
            return obj
    return None


def run_status(kmock, name: str) -> dict:
    obj = run_object(kmock, name)
    return (obj or {}).get("status") or {}
