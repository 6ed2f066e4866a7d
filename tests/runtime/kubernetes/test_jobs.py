"""What the operator asks Kubernetes to run: names, labels, owners, commands, resources, hardening."""

from __future__ import annotations

import re

import pytest

from kubevolve.cli.step import parse_step_command
from kubevolve.core.kinds import Role
from kubevolve.core.spec import parse_run_spec
from kubevolve.core.task import load_task
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, build_job
from kubevolve.runtime.kubernetes.names import (
    base_name,
    job_name,
    key_of_node,
    make_key,
    node_id,
    parse_key,
    retry_key,
    run_label,
)
from kubevolve.runtime.kubernetes.observe import job_info
from kubevolve.runtime.kubernetes.resources import TaskFacts, read_task, reported_facts
from kubevolve.runtime.kubernetes.trainjob import build_trainjob
from tests.kit.toy_task import write_task

RUN = RunRef("packing-1", "lab-a", "uid-123")
CONFIG = OperatorConfig(image="registry.lab/kubevolve:1", store_url="weaviate://weaviate.kv:8080")
GPU_TASK = TaskFacts(
    name="linear_attention", metric="acc", cpu=8, memory_mb=65536, gpus=1, timeout_seconds=1000
)
CPU_TASK = TaskFacts(name="circle_packing", metric="sum_radii", cpu=1, memory_mb=1024)


def spec(**fields):
    return parse_run_spec({"task": "tasks/x", **fields})


def container(job):
    return job["spec"]["template"]["spec"]["containers"][0]


def test_names_are_deterministic_short_and_parseable():
    assert job_name("packing-1", "evaluate", "00007") == "packing-1-eval-00007"
    assert job_name("packing-1", "evaluate", "00007", 2) == "packing-1-eval-00007-a2"
    long = "a" * 60 + ".b"
    assert len(job_name(long, "analyze", "1234567d10", 9)) <= 63 and base_name(long) == base_name(long)
    assert base_name("My.Run") != base_name("my-run") and base_name("7up").startswith("r")
    assert run_label("x" * 80) == base_name("x" * 80) and len(run_label("x" * 80)) <= 63
    assert make_key(7) == "00007" and parse_key("00007d2") == (7, 2) and retry_key("00007d2") == "00007d3"
    assert key_of_node("packing-1", node_id("packing-1", "00007d1")) == "00007d1"
    assert key_of_node("packing-1", "other-c00001") is None


def test_evaluation_job_is_hardened_owned_labelled_and_queued():
    s = spec(
        queueName="lab-gpu",
        jobs={
            "evaluate": {
                "nodeSelector": {"gpu": "h100"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            }
        },
    )
    job = build_job(RUN, s, CONFIG, GPU_TASK, JobRequest("evaluate", "00003", 1))
    meta, pod, c = job["metadata"], job["spec"]["template"]["spec"], container(job)
    assert meta["name"] == "packing-1-eval-00003-a1" and meta["namespace"] == "lab-a"
    assert (
        meta["labels"]["kubevolve.io/run"] == "packing-1"
        and meta["labels"]["kubevolve.io/role"] == "evaluate"
    )
    assert (
        meta["labels"]["kubevolve.io/candidate"] == "00003"
        and meta["labels"]["kueue.x-k8s.io/queue-name"] == "lab-gpu"
    )
    owner = meta["ownerReferences"][0]
    assert owner["kind"] == "EvolutionRun" and owner["uid"] == "uid-123" and owner["controller"] is True
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 2600
    # a legacy task (GPU_TASK has no runner): one container, given the candidate, storing nothing
    assert c["command"] == [
        "kubevolve",
        "step",
        "evaluate",
        "--run",
        "packing-1",
        "--node",
        "packing-1-c00003",
        "--input",
        "/input/evaluation.json",
        "--termination-log",
        "/dev/termination-log",
        "--workspace",
        "/scratch/work",
    ]
    assert c["name"] == "judge" and len(pod["containers"]) == 1
    assert job["spec"]["template"]["metadata"]["labels"]["kubevolve.io/network"] == "none"
    assert {"name": "input", "configMap": {"name": meta["name"], "defaultMode": 0o444}} in pod["volumes"]
    assert c["image"] == "registry.lab/kubevolve:1" and c["workingDir"] == "/opt/kubevolve"
    # hardened: no API token, non-root, read-only root, nothing to escalate, limits = requests
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"][
        "capabilities"
    ] == {"drop": ["ALL"]}
    assert (
        c["resources"]["limits"]
        == c["resources"]["requests"]
        == {"cpu": "8500m", "memory": "66304Mi", "nvidia.com/gpu": "1"}
    )
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]


def test_gpu_evaluations_use_the_gpu_image_unless_the_run_names_one():
    config = OperatorConfig(image="worker:1", gpu_image="trainer:1")
    gpu = build_job(RUN, spec(), config, GPU_TASK, JobRequest("evaluate", "00001"))
    cpu = build_job(RUN, spec(), config, CPU_TASK, JobRequest("evaluate", "00001"))
    proposal = build_job(RUN, spec(), config, GPU_TASK, JobRequest("propose", "00001"))
    assert [container(j)["image"] for j in (gpu, cpu, proposal)] == ["trainer:1", "worker:1", "worker:1"]
    own = build_job(RUN, spec(image="mine:2"), config, GPU_TASK, JobRequest("evaluate", "00001"))
    assert container(own)["image"] == "mine:2"


def test_only_proposal_and_analysis_pods_get_the_llm_key():
    s = spec(llm={"endpoint": "http://vllm:8000/v1", "apiKeySecret": {"name": "llm-key"}})
    env = {
        r: {
            e["name"]: e
            for e in container(build_job(RUN, s, CONFIG, CPU_TASK, JobRequest(r, "00001")))["env"]
        }
        for r in ("propose", "evaluate", "analyze")
    }
    key = {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-key", "key": "api-key"}}}
    assert env["propose"]["OPENAI_API_KEY"] == key and env["analyze"]["OPENAI_API_KEY"] == key
    assert "OPENAI_API_KEY" not in env["evaluate"]
    assert env["evaluate"]["KUBEVOLVE_HOME"]["value"] == "/scratch"


def test_proposal_command_names_its_node_and_the_failed_one_it_retries():
    job = build_job(
        RUN, spec(), CONFIG, CPU_TASK, JobRequest("propose", "00004d1", retry_of="packing-1-c00004")
    )
    assert container(job)["command"][:7] == [
        "kubevolve",
        "step",
        "propose",
        "--run",
        "packing-1",
        "--node-id",
        "packing-1-c00004d1",
    ]
    assert container(job)["command"][-2:] == ["--retry-of", "packing-1-c00004"]
    assert container(job)["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}


def test_resource_overrides_are_merged_and_mirrored():
    s = spec(
        jobs={"evaluate": {"gpus": 2, "resources": {"requests": {"cpu": 4}, "limits": {"memory": "16Gi"}}}}
    )
    res = container(build_job(RUN, s, CONFIG, GPU_TASK, JobRequest("evaluate", "00000")))["resources"]
    assert res["requests"]["cpu"] == res["limits"]["cpu"] == "4"
    assert res["requests"]["memory"] == res["limits"]["memory"] == "16Gi"
    assert res["limits"]["nvidia.com/gpu"] == "2"
    cpu = container(build_job(RUN, spec(), CONFIG, CPU_TASK, JobRequest("evaluate", "00000")))
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"] and all(
        m["name"] != "dshm" for m in cpu["volumeMounts"]
    )


def test_trainjob_for_multi_node_evaluation():
    s = spec(queueName="lab-gpu", jobs={"evaluate": {"gpus": 8, "trainJob": {"numNodes": 4}}})
    tj = build_trainjob(RUN, s, CONFIG, GPU_TASK, JobRequest("evaluate", "00002"))
    assert tj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and tj["kind"] == "TrainJob"
    assert tj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "lab-gpu"
    assert tj["spec"]["runtimeRef"] == {
        "name": "deepspeed-distributed",
        "kind": "ClusterTrainingRuntime",
        "apiGroup": "trainer.kubeflow.org",
    }
    trainer = tj["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert trainer["command"][:3] == ["kubevolve", "step", "evaluate"]
    with pytest.raises(ValueError):
        build_trainjob(RUN, spec(), CONFIG, GPU_TASK, JobRequest("evaluate", "00002"))


@pytest.mark.parametrize(
    ("status", "spec_", "state"),
    [
        ({}, {}, "active"),
        ({}, {"suspend": True}, "waiting"),
        ({"succeeded": 1}, {}, "succeeded"),
        ({"conditions": [{"type": "Complete", "status": "True"}]}, {}, "succeeded"),
        ({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}, {}, "failed"),
        ({"failed": 1}, {"backoffLimit": 0}, "failed"),
    ],
)
def test_job_state_is_read_from_status(status, spec_, state):
    job = build_job(RUN, spec(), CONFIG, CPU_TASK, JobRequest("evaluate", "00001", 2))
    job["status"], job["spec"] = status, {**job["spec"], **spec_}
    info = job_info(job)
    assert info.state == state and info.key == "00001" and info.attempt == 2
    assert info.node_id == "packing-1-c00001"
    if state == "failed" and "conditions" in status:
        assert "DeadlineExceeded" in info.reason


def test_config_from_environment():
    config = OperatorConfig.from_env(
        {
            "KUBEVOLVE_STORE": "sqlite:///x.db",
            "KUBEVOLVE_OPERATOR_RESYNC_SECONDS": "5",
            "KUBEVOLVE_OPERATOR_NAMESPACES": "a, b",
            "KUBEVOLVE_OPERATOR_TRAINJOBS": "true",
        },
        image="img:2",
    )
    assert config.store_url == "sqlite:///x.db" and config.resync_seconds == 5.0
    assert config.namespaces == ("a", "b") and config.trainjobs is True and config.image == "img:2"
    assert (
        str(config.task_path("tasks/x")) == "/opt/kubevolve/tasks/x" and str(config.task_path("/t")) == "/t"
    )


@pytest.mark.parametrize(
    "variable, value",
    [
        ("KUBEVOLVE_OPERATOR_RESYNC_SECONDS", "soon"),
        ("KUBEVOLVE_OPERATOR_RUN_AS_USER", "nobody"),
        ("KUBEVOLVE_OPERATOR_TRAINJOBS", "maybe"),
        ("KUBEVOLVE_METRICS_PORT", "9o90"),
    ],
)
def test_a_bad_setting_names_its_variable(variable, value):
    with pytest.raises(ValueError, match=f"{variable}='{value}'"):
        OperatorConfig.from_env({variable: value})


@pytest.mark.parametrize("role", list(Role))
def test_the_step_parser_reads_every_command_the_operator_writes(role):
    retry = "packing-1-c00004" if role is Role.PROPOSE else None
    req = JobRequest(role, "00004d1" if retry else "00004", retry_of=retry)
    command = container(build_job(RUN, spec(), CONFIG, CPU_TASK, req))["command"]
    parsed = parse_step_command(command)
    assert (
        parsed.role is role and parsed.run_id == "packing-1" and parsed.node_id == node_id(RUN.name, req.key)
    )
    if role is Role.EVALUATE:  # an evaluation pod is handed its candidate: no store, no tenant
        assert parsed.store_url is None and parsed.input_file is not None and parsed.termination_log
    else:
        assert (
            parsed.store_url == CONFIG.store_url
            and parsed.tenant == RUN.namespace
            and parsed.retry_of == retry
        )
    assert (parsed.workspace is not None) == (role is Role.EVALUATE)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["kubevolve", "run", "x"], "not a `kubevolve step` command"),
        (["kubevolve", "step", "train", "--run", "r"], "unknown step 'train'"),
        (["kubevolve", "step", "evaluate", "--run", "r"], "Missing parameter: node_id"),
        (
            ["kubevolve", "step", "analyze", "--run", "r", "--node", "n", "--rm", "-rf"],
            "No such option: --rm",
        ),
    ],
)
def test_the_step_parser_names_what_is_wrong_with_a_command(argv, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_step_command(argv)


def test_the_operator_reads_a_task_whose_summary_holds_more_than_it_uses(tmp_path):
    task = load_task(write_task(tmp_path / "toy"))
    assert set(task.summary()) > set(TaskFacts.__dataclass_fields__) - {"error"}  # e.g. the sampler's kind
    facts = read_task(tmp_path / "toy")
    assert facts.error == "" and facts.name == "toy" and facts.metric == "f" and facts.maximize
    assert reported_facts(task.summary(), CPU_TASK) == facts
