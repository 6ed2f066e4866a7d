"""The chart installed for several labs (tests/kit/cluster.py MULTI_LAB: the operator limited to lab-a and
lab-b, TrainJobs and the run browser on): every request the operator makes is allowed by the RBAC that install
renders, including kopf's namespace listing, which only a namespaced operator makes."""

from __future__ import annotations

import dataclasses

import pytest

from kubevolve.testing import RUNS
from kubevolve.testing.kubelet import Kubelet
from tests.kit.cluster import MULTI_LAB, values_for
from tests.kit.toy_task import write_task
from tests.runtime.kubernetes.conftest import NAMESPACE, run_manifest, run_status, until


@pytest.fixture
def operator_config(operator_config):
    return dataclasses.replace(operator_config, namespaces=("lab-a", "lab-b"))


@pytest.fixture
def chart_values(operator_config):
    values = values_for(operator_config)
    for key, value in MULTI_LAB.items():
        values[key] = {**values.get(key, {}), **value}
    return values


async def test_a_namespaced_operator_needs_only_what_the_multi_lab_install_grants(
    kmock, api, operator, tmp_path
):
    assert NAMESPACE in operator.config.namespaces
    write_task(tmp_path / "toy")
    kubelet = Kubelet(api, mode="fake", concurrency=2)
    kubelet.start()
    try:
        await operator.start()
        evaluate = {"gpus": 8, "trainJob": {"numNodes": 2}}  # one TrainJob per evaluation
        await api.create(
            RUNS, run_manifest("labs", "toy", budget={"maxCandidates": 3}, jobs={"evaluate": evaluate})
        )
        await until(lambda: run_status(kmock, "labs").get("phase") == "Succeeded", 40, "Succeeded")
    finally:
        await kubelet.stop()
    used = {(verb, resource) for (_grant, verb, resource) in kmock.policy.used}
    assert {("list", "namespaces"), ("watch", "namespaces"), ("create", "trainjobs")} <= used
