"""End to end against kmock: the real kopf operator, Jobs run as local processes with the real step code,
a SQLite store file shared by the proposal and analysis "pods", evaluation pods that are handed their
candidate and publish their result (a judge and a candidate container, as different uids where the kubelet
can switch to them), and a restart of the operator in the middle of the run."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from kubevolve.core.kinds import Role
from kubevolve.core.models import Stage
from kubevolve.runtime.kubernetes.names import job_name, key_of_node, node_id
from kubevolve.store import open_store
from kubevolve.testing import JOBS, RUNS, live_objects
from kubevolve.testing.kubelet import Kubelet
from tests.kit.toy_task import write_task
from tests.runtime.kubernetes.conftest import NAMESPACE, run_manifest, run_status, until

CANDIDATES = 5


@pytest.fixture
def operator_config(operator_config):
    """The task root in a folder every uid can read: the evaluation pods' containers run as their own."""
    root = tempfile.mkdtemp(prefix="kv-tasks-")
    os.chmod(root, 0o755)
    yield dataclasses.replace(operator_config, task_root=root)
    shutil.rmtree(root, ignore_errors=True)


def is_evaluation(job: dict) -> bool:
    return job["metadata"]["labels"].get("kubevolve.io/role") == "evaluate"


def run_jobs(kmock, run: str) -> list[dict]:
    return [
        j for j in live_objects(kmock, JOBS, NAMESPACE) if j["metadata"]["labels"]["kubevolve.io/run"] == run
    ]


async def test_run_succeeds_across_an_operator_restart(kmock, api, operator, operator_config, store_url):
    write_task(Path(operator_config.task_root) / "toy")
    kubelet = Kubelet(api, mode="process", concurrency=2, identities=is_evaluation)
    kubelet.start()
    await operator.start()
    spec = {"budget": {"maxCandidates": CANDIDATES}, "parallelism": {"evaluators": 2, "proposers": 2}}
    await api.create(RUNS, run_manifest("toy-e2e", "toy", **spec))
    try:
        # the first Job is the initial program's proposal, with the command a real pod would run
        first = await until(lambda: run_jobs(kmock, "toy-e2e"), 30, "the first Job")
        command = first[0]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[:3] == ["kubevolve", "step", "propose"] and "--tenant" in command

        await until(
            lambda: run_status(kmock, "toy-e2e").get("candidates", {}).get("evaluated", 0) >= 2,
            120,
            "two evaluated candidates",
        )
        await operator.stop()  # mid-run: Jobs keep running and finishing while no operator watches
        await asyncio.sleep(1.0)
        await operator.start()

        await until(lambda: run_status(kmock, "toy-e2e").get("phase") == "Succeeded", 150, "Succeeded")
        await until(lambda: not run_jobs(kmock, "toy-e2e"), 60, "finished Jobs to be cleaned up")
    finally:
        await kubelet.stop()

    status = run_status(kmock, "toy-e2e")
    store = open_store(store_url, tenant=NAMESPACE)
    best = store.best_node("toy-e2e")
    assert status["bestScore"] == best.metrics["f"] and status["bestNode"] == best.id
    assert status["candidates"]["total"] == CANDIDATES and status["candidates"]["proposed"] == 0
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (
        conditions["Succeeded"]["status"] == "True"
        and conditions["Succeeded"]["reason"] == "MaxCandidatesReached"
    )
    assert store.get_run("toy-e2e").phase == "Succeeded"

    nodes = store.list_nodes("toy-e2e")
    assert len(nodes) == CANDIDATES and all(n.stage.is_final for n in nodes)
    # nothing lost or run twice: every Job ran once, every candidate was proposed and evaluated once
    assert operator.starts == 2
    assert set(kubelet.started.values()) == {1}
    for node in nodes:
        assert kubelet.ran[("propose", node.id)] == 1
        if node.stage is Stage.EVALUATED:
            assert kubelet.ran[("evaluate", node.id)] == 1
            assert kubelet.ran[("analyze", node.id)] == 1 and node.insight_id
    assert nodes[0].id == node_id("toy-e2e", "00000") and not nodes[0].parent_ids
    # every evaluation ran in a judge and a candidate container, separate processes (as separate uids where
    # the kubelet could switch), and its result reached the store through the pod, not from the pod
    for node in nodes:
        if node.stage is not Stage.EVALUATED:
            continue
        name = job_name("toy-e2e", Role.EVALUATE, key_of_node("toy-e2e", node.id) or "")
        judge, candidate = (kubelet.pods[name].containers[c] for c in ("judge", "candidate"))
        assert judge.exit_code == candidate.exit_code == 0 and judge.pid != candidate.pid
        assert node.id in judge.message and not candidate.message and "--store" not in judge.output
        spec = kubelet.bodies[name]["spec"]["template"]["spec"]
        if kubelet.identified:
            by_name = {c["name"]: c for c in spec["containers"]}
            assert judge.uid == spec["securityContext"]["runAsUser"] == 65532
            assert candidate.uid == by_name["candidate"]["securityContext"]["runAsUser"] != judge.uid
        assert node.metrics["f"] == node.score and node.artifacts["point"]
    assert not live_objects(kmock, "v1/configmaps", NAMESPACE)  # each evaluation's input went with its Job
    events = {e.get("reason") for e in live_objects(kmock, "v1/events", NAMESPACE)}
    assert {"Started", "NewBest", "BudgetReached"} <= events

    # the operator exports the run's metrics from the store, at its totals after the restart (not doubled)
    def metric(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"namespace": NAMESPACE, "run": "toy-e2e", **labels})

    evaluated = [n for n in nodes if n.stage is Stage.EVALUATED]
    await until(
        lambda: metric("kubevolve_candidates_total", outcome="evaluated") == len(evaluated), 15, "metrics"
    )
    assert metric("kubevolve_best_score") == best.score
    for name, step, labels in [("proposal", "propose", {}), ("evaluation", "quick", {"stage": "quick"})]:
        timed = sum(1 for n in nodes if step in n.timings)  # the initial program is not proposed
        assert (
            timed >= CANDIDATES - 1 and metric(f"kubevolve_{name}_duration_seconds_count", **labels) == timed
        )
