"""The operator's behaviour against kmock, with in-process fake steps (the operator's decisions are under
test here; the step code is exercised end to end in test_e2e.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Stage
from kubevolve.runtime.kubernetes import QUEUE_LABEL
from kubevolve.runtime.kubernetes.names import node_id
from kubevolve.store import open_store
from kubevolve.testing import JOBS, RUNS, TRAINJOBS, ApiError, live_objects
from kubevolve.testing.kubelet import Kubelet
from tests.kit.toy_task import write_task
from tests.runtime.kubernetes.conftest import NAMESPACE, run_manifest, run_object, run_status, until


def jobs_of(kmock, run: str, resource: str = JOBS) -> list[dict]:
    return [
        j
        for j in live_objects(kmock, resource, NAMESPACE)
        if j["metadata"]["labels"]["kubevolve.io/run"] == run
    ]


def ever_created(kmock, run: str) -> set[str]:
    """Every Job name the run ever had (kmock keeps deleted objects' history)."""
    return {name for (res, ns, name) in kmock.objects if res.plural == "jobs" and name.startswith(f"{run}-")}


def reasons(kmock) -> set[str]:
    """The reasons of the Kubernetes events posted so far."""
    return {e["reason"] for e in live_objects(kmock, "v1/events", NAMESPACE)}


def condition(status: dict, kind: str) -> dict:
    return next(c for c in status.get("conditions", []) if c["type"] == kind)


@pytest.fixture
def toy(tmp_path):
    return write_task(tmp_path / "toy")


@pytest.fixture
async def kubelet(kmock, api):
    k = Kubelet(api, mode="fake", concurrency=4)
    k.start()
    yield k
    await k.stop()


async def test_failing_evaluation_is_retried_then_recorded_failed(
    kmock, api, operator, kubelet, toy, store_url
):
    kubelet.fail = lambda job: "OOMKilled" if job["metadata"]["name"].startswith("retry-eval-00002") else None
    await operator.start()
    spec = {"budget": {"maxCandidates": 5}, "failurePolicy": {"maxAttempts": 2, "backoffSeconds": 0.3}}
    await api.create(RUNS, run_manifest("retry", "toy", **spec))
    await until(lambda: run_status(kmock, "retry").get("phase") == "Succeeded", 60, "Succeeded")

    assert kubelet.started["retry-eval-00002"] == 1 and kubelet.started["retry-eval-00002-a1"] == 1
    assert "retry-eval-00002-a2" not in kubelet.started  # maxAttempts 2
    node = open_store(store_url, tenant=NAMESPACE).get_node(node_id("retry", "00002"))
    assert node.stage is Stage.FAILED_QUICK
    assert "evaluation Job failed 2 times" in node.error and "OOMKilled" in node.error
    assert node.failure is FailureKind.JOB_FAILED
    status = run_status(kmock, "retry")
    assert status["candidates"]["failedQuick"] == 1 and status["candidates"]["total"] == 5
    assert status["jobs"]["failed"] == 1  # its failed Jobs are kept for `kubectl describe`
    assert {j["metadata"]["name"] for j in jobs_of(kmock, "retry")} >= {
        "retry-eval-00002",
        "retry-eval-00002-a1",
    }
    await until(
        lambda: {"JobRetried", "CandidateFailed", "NewBest", "BudgetReached"} <= reasons(kmock), 10, "events"
    )


async def test_suspend_stops_new_jobs_and_resume_finishes(kmock, api, operator, kubelet, toy):
    await operator.start()
    await api.create(RUNS, run_manifest("pause", "toy", suspend=True, budget={"maxCandidates": 8}))
    await until(lambda: run_status(kmock, "pause").get("phase") == "Suspended", 20, "Suspended")
    await asyncio.sleep(0.5)
    assert not ever_created(kmock, "pause")
    assert condition(run_status(kmock, "pause"), "Suspended")["status"] == "True"

    kubelet.slots = asyncio.Semaphore(1)
    await api.patch(RUNS, NAMESPACE, "pause", {"spec": {"suspend": False}})
    await until(
        lambda: run_status(kmock, "pause").get("candidates", {}).get("evaluated", 0) >= 2, 30, "progress"
    )
    await api.patch(RUNS, NAMESPACE, "pause", {"spec": {"suspend": True}})
    await until(lambda: run_status(kmock, "pause").get("phase") == "Suspended", 20, "Suspended again")
    frozen = ever_created(kmock, "pause")
    await until(
        lambda: not [j for j in jobs_of(kmock, "pause") if not j.get("status", {}).get("conditions")],
        20,
        "running Jobs to finish",
    )
    await asyncio.sleep(1.0)
    assert ever_created(kmock, "pause") == frozen  # no new Job while suspended; running ones finished
    assert run_status(kmock, "pause")["candidates"]["total"] < 8

    await api.patch(RUNS, NAMESPACE, "pause", {"spec": {"suspend": False}})
    await until(lambda: run_status(kmock, "pause").get("phase") == "Succeeded", 60, "Succeeded after resume")
    await until(lambda: {"Suspended", "Resumed"} <= reasons(kmock), 10, "events")


async def test_kueue_admission_is_shown_and_deleting_the_run_removes_its_jobs(
    kmock, api, operator, kubelet, toy
):
    kubelet.kueue = True  # queued Jobs are suspended until admitted; none is admitted here
    await operator.start()
    await api.create(RUNS, run_manifest("queued", "toy", queueName="lab-a-gpus"))
    await until(
        lambda: (
            condition(run_status(kmock, "queued"), "Progressing")["reason"] == "WaitingForAdmission"
            if run_status(kmock, "queued").get("conditions")
            else False
        ),
        20,
        "WaitingForAdmission",
    )
    status = run_status(kmock, "queued")
    assert (
        status["jobs"]["waitingAdmission"] == 1
        and "lab-a-gpus" in condition(status, "Progressing")["message"]
    )
    (job,) = jobs_of(kmock, "queued")
    assert job["metadata"]["labels"][QUEUE_LABEL] == "lab-a-gpus" and job["spec"]["suspend"] is True

    kubelet.admit(1)  # Kueue admits the initial program's proposal: the run goes on and queues its next Jobs
    await until(lambda: len(ever_created(kmock, "queued")) >= 2, 20, "the next Job")
    assert run_object(kmock, "queued")["metadata"]["finalizers"] == ["kubevolve.io/cleanup"]
    slots = {"namespace": NAMESPACE, "run": "queued"}
    assert (
        REGISTRY.get_sample_value("kubevolve_evaluator_slots", slots) is not None
    )  # the run's metrics exist
    await api.delete(RUNS, NAMESPACE, "queued")
    await until(lambda: run_object(kmock, "queued") is None, 20, "the run to be deleted")
    assert jobs_of(kmock, "queued") == []
    assert REGISTRY.get_sample_value("kubevolve_evaluator_slots", slots) is None  # and went with it


async def test_bad_field_is_refused_by_the_api_server_with_its_name(kmock, api, operator, toy):
    with pytest.raises(ApiError) as err:
        await api.create(RUNS, run_manifest("typo", "toy", budget={"maxCandidatez": 3}))
    assert err.value.status == 422 and "spec.budget.maxCandidatez" in err.value.message
    with pytest.raises(ApiError) as err:
        await api.create(RUNS, run_manifest("zero", "toy", parallelism={"evaluators": 0}))
    assert (
        "spec.parallelism.evaluators" in err.value.message
        and "greater than or equal to 1" in err.value.message
    )
    assert run_object(kmock, "typo") is None and run_object(kmock, "zero") is None


async def test_a_bad_quantity_is_refused_at_apply_not_by_every_job_create(kmock, api, toy):
    """Issue 14, defect 6: `8GB` passed the CRD, then every Job create of the run was a 422 on a real server."""
    resources = {"limits": {"memory": "8GB"}}
    with pytest.raises(ApiError) as err:
        await api.create(RUNS, run_manifest("bytes", "toy", jobs={"evaluate": {"resources": resources}}))
    assert err.value.status == 422 and "spec.jobs.evaluate.resources.limits.memory" in err.value.message
    assert "8GB" in err.value.message and run_object(kmock, "bytes") is None


async def test_operator_refuses_a_spec_that_slipped_past_the_schema(kmock, api, operator, toy):
    """E.g. a CRD applied without its schema: the operator's own validation names the field."""
    bad = run_manifest("sneaky", "toy", sampler={"kind": "best"})
    kmock.objects[RUNS, NAMESPACE, "sneaky"] = {
        **bad,
        "metadata": {**bad["metadata"], "resourceVersion": "1"},
    }
    await operator.start()
    await until(lambda: run_status(kmock, "sneaky").get("phase") == "Failed", 20, "Failed")
    status = run_status(kmock, "sneaky")
    assert "spec.sampler.kind" in status["message"]
    assert condition(status, "Ready")["reason"] == "InvalidSpec"
    assert not ever_created(kmock, "sneaky")


async def test_multi_node_evaluation_is_a_trainjob(kmock, api, operator, kubelet, toy):
    await operator.start()
    evaluate = {"gpus": 8, "trainJob": {"numNodes": 2}}
    await api.create(
        RUNS, run_manifest("big", "toy", budget={"maxCandidates": 3}, jobs={"evaluate": evaluate})
    )
    await until(lambda: run_status(kmock, "big").get("phase") == "Succeeded", 40, "Succeeded")
    names = {name for (res, _ns, name) in kmock.objects if res.plural == "trainjobs"}
    assert names >= {"big-eval-00000", "big-eval-00001", "big-eval-00002"}
    assert not any(name.startswith("big-eval") for name in ever_created(kmock, "big"))
    trainjob = kmock.objects[TRAINJOBS, NAMESPACE, "big-eval-00000"].history[0]
    trainer = trainjob["spec"]["trainer"]
    runtimes = [
        o
        for (res, ns, _n), o in kmock.objects.items()
        if res.plural == "trainingruntimes" and ns == NAMESPACE
    ]
    assert len(runtimes) == 1  # the run's own, made once, and named by every TrainJob
    assert trainjob["spec"]["runtimeRef"] == {
        "name": runtimes[0]["metadata"]["name"],
        "kind": "TrainingRuntime",
        "apiGroup": "trainer.kubeflow.org",
    }
    assert trainer["numNodes"] == 2 and trainjob["spec"]["activeDeadlineSeconds"] > 0
    (node_job,) = [
        j for j in runtimes[0]["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node"
    ]
    (node,) = node_job["template"]["spec"]["template"]["spec"]["containers"]
    assert node["resources"]["limits"]["nvidia.com/gpu"] == "8"  # each node pod's, in the run's runtime
    assert trainer["command"][:3] == ["kubevolve", "step", "evaluate"]
    assert trainer["numProcPerNode"] == 8


async def test_the_api_server_sends_only_the_runs_jobs(kmock, api, operator, kubelet, toy):
    """Every list and watch of Jobs and TrainJobs carries a label selector: a cluster's other Jobs never reach
    the operator (kopf's `labels=` on a handler filters only after they have)."""
    await operator.start()
    await api.create(RUNS, run_manifest("sel", "toy", budget={"maxCandidates": 2}))
    await until(lambda: run_status(kmock, "sel").get("phase") == "Succeeded", 40, "Succeeded")
    reads = [
        r
        for r in kmock
        if r.resource is not None
        and r.resource.plural in ("jobs", "trainjobs")
        and str(r.method).upper().endswith("GET")
        and not r.headers.get("User-Agent", "").startswith("Python")  # aiohttp: the test's kubelet
    ]
    assert {r.resource.plural for r in reads} == {"jobs", "trainjobs"}
    assert all(r.params.get("labelSelector") == "kubevolve.io/run" for r in reads), [
        (str(r.url), dict(r.params)) for r in reads if r.params.get("labelSelector") != "kubevolve.io/run"
    ]


async def test_a_trainjob_run_on_an_operator_without_trainjobs_is_refused_once(kmock, api, operator, toy):
    """The chart's default (operator.trainJobs: false): no TrainJob create (a 403 on a real cluster, retried
    every few seconds), but a Failed run whose condition says what to change."""
    operator.config = replace(operator.config, trainjobs=False)
    await operator.start()
    evaluate = {"gpus": 8, "trainJob": {"numNodes": 2}}
    await api.create(RUNS, run_manifest("nodist", "toy", jobs={"evaluate": evaluate}))
    await until(lambda: run_status(kmock, "nodist").get("phase") == "Failed", 20, "Failed")
    status = run_status(kmock, "nodist")
    assert condition(status, "Failed")["reason"] == "TrainJobsDisabled"
    assert "operator.trainJobs" in status["message"] and "spec.jobs.evaluate.trainJob" in status["message"]
    await asyncio.sleep(1.0)
    writes = [r for r in kmock if r.resource is not None and r.resource.plural in ("jobs", "trainjobs")]
    assert not [r for r in writes if str(r.method).upper().endswith("POST")]
    assert "TrainJobsDisabled" in reasons(kmock)
