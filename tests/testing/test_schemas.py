"""The test kit's object validation refuses what a 1.35 API server refuses: schema errors and unknown fields
of built-in kinds, bad quantities, requests over limits, bad names and labels; custom resources against the
published CRDs of Kueue and Trainer, with deprecated and unserved versions told apart."""

from __future__ import annotations

import copy

import pytest

from kubevolve.core.kinds import Role
from kubevolve.core.spec import RunSpec
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, build_job
from kubevolve.runtime.kubernetes.resources import TaskFacts
from kubevolve.runtime.kubernetes.trainjob import build_trainjob
from kubevolve.testing.schemas import ObjectValidator, schema_version
from tests.kit.cluster import validator

RUN = RunRef("toy", "lab-a", "0000-1111")


def job(**spec) -> dict:
    return build_job(
        RUN,
        RunSpec(task="t", **spec),
        OperatorConfig(),
        TaskFacts(name="t"),
        JobRequest(Role.EVALUATE, "00001"),
    )


def test_the_schemas_are_kubernetes_1_35():
    assert schema_version("1.35") == "1.35.0"


def test_the_operators_job_is_valid():
    verdict = validator().validate(job(), "lab-a")
    assert verdict.errors == [] and verdict.warnings == []


def container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda j: container(j)["resources"]["limits"].update(memory="8GB"),
            "limits.memory: Invalid value: '8GB': quantities must match",
        ),
        (
            lambda j: container(j).update(imagePullPolicy_="Always"),
            "containers[0].imagePullPolicy_: unknown field",
        ),
        (lambda j: j["spec"].update(backoffLimit="0"), "spec.backoffLimit: '0' is not of type"),
        (
            lambda j: container(j)["resources"]["requests"].update(cpu="4"),
            "requests.cpu: Invalid value: must be less than or equal to cpu limit",
        ),
        (
            lambda j: (
                container(j)["resources"]["requests"].update({"nvidia.com/gpu": "1"}),
                container(j)["resources"]["limits"].update({"nvidia.com/gpu": "2"}),
            ),
            "requests.nvidia.com/gpu: Invalid value: must be equal to nvidia.com/gpu limit",
        ),
        (lambda j: j["metadata"].update(name="x" * 64), "a Job's name must be no more than 63 characters"),
        (lambda j: j["metadata"].update(name="Toy_Run"), "metadata.name: Invalid value: 'Toy_Run'"),
        (
            lambda j: j["metadata"]["labels"].update({"kubevolve.io/run": "-bad-"}),
            "metadata.labels.kubevolve.io/run: Invalid value: '-bad-'",
        ),
        (lambda j: j["metadata"].update(namespace="lab-b"), "does not match the request's 'lab-a'"),
    ],
)
def test_what_the_api_server_refuses_is_refused_naming_the_field(change, message):
    bad = copy.deepcopy(job())
    change(bad)
    errors = validator().validate(bad, "lab-a").errors
    assert any(message in e for e in errors), errors


LOCAL_QUEUE = {
    "kind": "LocalQueue",
    "metadata": {"name": "kubevolve", "namespace": "lab-a"},
    "spec": {"clusterQueue": "gpus"},
}


def test_kueue_objects_are_checked_against_kueues_crd_and_a_deprecated_version_is_a_warning():
    current = validator().validate({"apiVersion": "kueue.x-k8s.io/v1beta2", **LOCAL_QUEUE})
    assert current.errors == [] and current.warnings == []
    old = validator().validate({"apiVersion": "kueue.x-k8s.io/v1beta1", **LOCAL_QUEUE})
    assert old.errors == [] and "deprecated" in old.warnings[0] and "v1beta2" in old.warnings[0]
    gone = validator().validate({"apiVersion": "kueue.x-k8s.io/v1alpha1", **LOCAL_QUEUE})
    assert "is not served" in gone.errors[0]
    typo = {"apiVersion": "kueue.x-k8s.io/v1beta2", **LOCAL_QUEUE, "spec": {"clusterQueu": "gpus"}}
    assert validator().validate(typo).errors == ["spec.clusterQueu: unknown field"]


def test_the_operators_trainjob_is_checked_against_trainers_crd():
    spec = RunSpec(task="t", jobs={"evaluate": {"gpus": 8, "trainJob": {"numNodes": 2}}})
    trainjob = build_trainjob(
        RUN, spec, OperatorConfig(), TaskFacts(name="t"), JobRequest(Role.EVALUATE, "00001")
    )
    assert validator().validate(trainjob, "lab-a").errors == []
    trainjob["spec"]["trainer"]["numNodes"] = "2"
    trainjob["spec"]["trainer"]["workingDir"] = "/opt"
    errors = validator().validate(trainjob, "lab-a").errors
    assert "spec.trainer.workingDir: unknown field" in errors and any(
        "spec.trainer.numNodes" in e for e in errors
    )
    # what cannot be checked here is counted, not silently passed: Trainer's CEL rules
    (schema,) = [s for (api, kind), s in validator().crds.items() if kind == "TrainJob"]
    assert schema.unchecked.get("x-kubernetes-validations", 0) > 0


def test_an_unknown_kind_is_an_error_not_a_pass():
    verdict = ObjectValidator().validate(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    )
    assert "no schema for example.com/v1 Widget" in verdict.errors[0]
