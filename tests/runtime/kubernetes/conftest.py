"""Fixtures for the operator tests: kmock's emulated API server (with the CRD's schema check), the operator
running in the test's event loop, and a kubelet stand-in that runs the Jobs."""

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

from kubevolve.runtime.kubernetes import API_VERSION, KIND
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.kube import Kube
from kubevolve.runtime.kubernetes.main import RunningOperator, start_operator
from kubevolve.testing import RUNS, Api, ValidatingEmulator, declare_resources, live_objects

NAMESPACE = "lab-a"


@pytest.fixture
def kmock_options():
    return {"cls": ValidatingEmulator}


TRAINING_RUNTIMES = "trainer.kubeflow.org/v1alpha1/trainingruntimes"


@pytest.fixture
async def api(kmock):
    declare_resources(kmock)
    kmock.resources[TRAINING_RUNTIMES] = kmock.ResourceInfo(
        kind="TrainingRuntime", namespaced=True, verbs={"get", "list", "create", "delete"}
    )
    client = Api(str(kmock.url))
    yield client
    await client.close()


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
        login = kopf.ConnectionInfo(server=str(self.kmock.url), insecure=True)
        self.running = await start_operator(self.config, Kube.for_server(str(self.kmock.url)), login=login)
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


def run_object(kmock, name: str) -> dict | None:
    for obj in live_objects(kmock, RUNS, NAMESPACE):
        if obj["metadata"]["name"] == name:
            return obj
    return None


def run_status(kmock, name: str) -> dict:
    obj = run_object(kmock, name)
    return (obj or {}).get("status") or {}
