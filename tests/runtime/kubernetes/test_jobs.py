"""What the operator asks Kubernetes to run: names, labels, owners, commands, resources, hardening."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from kubevolve.cli.step import parse_step_command
from kubevolve.core.kinds import Role
from kubevolve.core.spec import parse_run_spec
from kubevolve.core.task import load_task
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, build_job
from kubevolve.runtime.kubernetes.names import (
    TRAINJOB_NAME_MAX,
    base_name,
    job_name,
    key_of_node,
    make_key,
    node_id,
    parse_key,
    retry_key,
    run_label,
    trainjob_name,
)
from kubevolve.runtime.kubernetes.observe import job_info
from kubevolve.runtime.kubernetes.resources import TaskFacts, read_task, reported_facts
from kubevolve.runtime.kubernetes.trainjob import build_runtime, build_trainjob
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
    # a drained node or a preempted pod is started again, not counted as the step's failure
    assert job["spec"]["podFailurePolicy"] == {
        "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
    }
    assert job["spec"]["ttlSecondsAfterFinished"] == 7 * 24 * 3600  # a backstop; the operator deletes first
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
    req = JobRequest("evaluate", "00002")
    tj = build_trainjob(RUN, s, CONFIG, GPU_TASK, req)
    assert tj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and tj["kind"] == "TrainJob"
    assert tj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "lab-gpu"
    runtime = build_runtime(RUN, s, CONFIG, GPU_TASK)
    assert tj["spec"]["runtimeRef"] == {
        "name": runtime["metadata"]["name"],
        "kind": "TrainingRuntime",
        "apiGroup": "trainer.kubeflow.org",
    }
    trainer = tj["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    # the run's own runtime sizes each container: resourcesPerNode would give the launcher's judge the GPUs
    assert "resourcesPerNode" not in trainer
    node_job = next(j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node")
    (node,) = node_job["template"]["spec"]["template"]["spec"]["containers"]
    assert node["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert trainer["command"][:3] == ["kubevolve", "step", "evaluate"]
    assert "--store" not in trainer["command"] and "--termination-log" in trainer["command"]
    assert tj["spec"]["activeDeadlineSeconds"] == 2600  # as a Job's
    admins = spec(jobs={"evaluate": {"gpus": 8, "trainJob": {"numNodes": 4, "runtime": "site-mpi"}}})
    admin_trainer = build_trainjob(RUN, admins, CONFIG, GPU_TASK, req)["spec"]["trainer"]
    assert admin_trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    with pytest.raises(ValueError):
        build_trainjob(RUN, spec(), CONFIG, GPU_TASK, JobRequest("evaluate", "00002"))


def test_every_pod_of_a_trainjob_runs_the_run_image_hardened_and_labelled():
    """Trainer gives trainer.image and command to the launcher only, and the TrainJob's labels to no pod: the
    node pods' image, user and token come from the runtime, their labels and scratch from the patch."""
    s = spec(
        image="registry.lab/lab-a/my-task:3", jobs={"evaluate": {"gpus": 8, "trainJob": {"numNodes": 2}}}
    )
    runtime = build_runtime(RUN, s, CONFIG, GPU_TASK)
    assert runtime["kind"] == "TrainingRuntime" and runtime["metadata"]["namespace"] == "lab-a"
    assert runtime["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
    assert runtime["spec"]["mlPolicy"]["mpi"]["runLauncherAsNode"] is True
    jobs = {j["name"]: j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"]}
    assert set(jobs) == {"launcher", "node"}
    assert jobs["launcher"]["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"
    }
    for job in jobs.values():
        pod = job["template"]["spec"]["template"]["spec"]
        (node,) = pod["containers"]
        assert node["name"] == "node" and node["image"] == "registry.lab/lab-a/my-task:3"
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        assert pod["securityContext"]["runAsUser"] == 65532 and pod["securityContext"]["runAsNonRoot"] is True
    assert (
        jobs["node"]["template"]["spec"]["template"]["spec"]["containers"][0]["command"][0]
        == "/usr/sbin/sshd"
    )
    # another image, another runtime; the same image, the same one
    other = build_runtime(RUN, spec(image="registry.lab/lab-a/my-task:4"), CONFIG, GPU_TASK)
    assert other["metadata"]["name"] != runtime["metadata"]["name"]
    assert build_runtime(RUN, s, CONFIG, GPU_TASK)["metadata"]["name"] == runtime["metadata"]["name"]

    tj = build_trainjob(RUN, s, CONFIG, GPU_TASK, JobRequest("evaluate", "00005", 1))
    (patch,) = tj["spec"]["runtimePatches"]
    assert patch["manager"] == "kubevolve.io/operator"
    patched = {
        j["name"]: j["template"]["spec"]["template"]
        for j in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    }
    assert set(patched) == {"launcher", "node"}
    for template in patched.values():
        labels = template["metadata"]["labels"]
        assert labels["kubevolve.io/role"] == "evaluate"  # the evaluation NetworkPolicy selects every pod
        assert labels["kubevolve.io/candidate"] == "00005" and labels["kubevolve.io/attempt"] == "1"
        assert "kueue.x-k8s.io/queue-name" not in labels
        pod = template["spec"]
        assert {"name": "scratch", "emptyDir": {"sizeLimit": "8Gi"}} in pod["volumes"]
        (node,) = pod["containers"]
        assert node["name"] == "node" and "env" not in node  # Trainer refuses env patches of `node`
        assert {"name": "scratch", "mountPath": "/scratch"} in node["volumeMounts"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in node["volumeMounts"]
        assert node["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [e for e in tj["spec"]["trainer"]["env"] if e["name"] == "KUBEVOLVE_STORE_API_KEY"]

    named = spec(jobs={"evaluate": {"trainJob": {"runtime": "site-mpi", "numNodes": 2}}})
    tj = build_trainjob(RUN, named, CONFIG, GPU_TASK, JobRequest("evaluate", "00005"))
    assert tj["spec"]["runtimeRef"] == {
        "name": "site-mpi",
        "kind": "ClusterTrainingRuntime",
        "apiGroup": "trainer.kubeflow.org",
    }
    assert tj["spec"]["runtimePatches"][0]["manager"] == "kubevolve.io/operator"


def test_trainjob_names_leave_room_for_jobset_pod_names():
    """JobSet refuses a JobSet whose pods would be named past 63 characters: `<name>-launcher-0-0-abcde`."""
    for run in ("packing-1", "x" * 40, "a-very-long-run-name-for-a-lab-with-long-names-" * 2):
        for key, attempt in (("00007", 0), ("1234567d10", 9)):
            name = trainjob_name(run, key, attempt)
            assert len(name) <= TRAINJOB_NAME_MAX == 41 and re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", name)
            assert len(f"{name}-launcher-0-1023-abcde") <= 63
    assert trainjob_name("packing-1", "00007") == "packing-1-eval-00007"  # short names stay readable
    long = "x" * 40
    names = {trainjob_name(long, k, a) for k in ("00001", "00002") for a in (0, 1)}
    assert len(names) == 4  # still one per candidate and attempt
    s = spec(jobs={"evaluate": {"trainJob": {"numNodes": 2}}})
    run = RunRef(long, "lab-a", "u")
    assert (
        build_trainjob(run, s, CONFIG, GPU_TASK, JobRequest("evaluate", "00001"))["metadata"]["name"] in names
    )


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


def test_a_jobs_start_time_comes_from_its_status_or_else_its_creation():
    """What the pacer counts a running evaluation or proposal from, read from the watch stream's body."""
    job = build_job(RUN, spec(), CONFIG, CPU_TASK, JobRequest("evaluate", "00001"))
    assert job_info(job).started_at is None  # as built: not created yet
    job["metadata"]["creationTimestamp"] = "2026-12-03T22:00:00Z"
    assert job_info(job).started_at == 1796335200.0
    job["status"] = {"startTime": "2026-12-03T22:00:05Z"}
    assert job_info(job).started_at == 1796335205.0
    job["status"] = {"startTime": "yesterday"}  # unreadable: as if it had none
    assert job_info(job).started_at == 1796335200.0


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


def test_step_pods_run_as_the_step_service_account_and_pull_with_the_registry_secrets():
    """Issue 14, defect 7: step pods had no service account and no imagePullSecrets, so a private registry
    left them in ImagePullBackOff. The chart's settings come through the operator's environment; a run may
    name its own."""
    config = OperatorConfig.from_env(
        {
            "KUBEVOLVE_OPERATOR_STEP_SERVICE_ACCOUNT": "kubevolve-step",
            "KUBEVOLVE_OPERATOR_IMAGE_PULL_SECRETS": "reg, mirror",
        }
    )
    for role in Role:
        pod = build_job(RUN, spec(), config, CPU_TASK, JobRequest(role, "00001"))["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "kubevolve-step" and pod["automountServiceAccountToken"] is False
        assert pod["imagePullSecrets"] == [{"name": "reg"}, {"name": "mirror"}]
    own = spec(serviceAccountName="vision-steps", imagePullSecrets=[{"name": "vision-registry"}])
    pod = build_job(RUN, own, config, CPU_TASK, JobRequest(Role.EVALUATE, "00001"))["spec"]["template"][
        "spec"
    ]
    assert pod["serviceAccountName"] == "vision-steps" and pod["imagePullSecrets"] == [
        {"name": "vision-registry"}
    ]
    unset = OperatorConfig.from_env({"KUBEVOLVE_OPERATOR_STEP_SERVICE_ACCOUNT": ""})
    pod = build_job(RUN, spec(imagePullSecrets=[]), unset, CPU_TASK, JobRequest(Role.EVALUATE, "00001"))
    assert not {"serviceAccountName", "imagePullSecrets"} & set(pod["spec"]["template"]["spec"])


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
    queued = 1796335200.25 if role is Role.PROPOSE else None
    req = JobRequest(role, "00004d1" if retry else "00004", retry_of=retry, queued_at=queued)
    command = container(build_job(RUN, spec(), CONFIG, CPU_TASK, req))["command"]
    parsed = parse_step_command(command)
    assert parsed.queued_at == queued  # a proposal times its Job from the operator's decision
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


def test_evaluation_pods_never_get_a_store_key_and_the_others_get_their_labs():
    """Candidate code runs in evaluation pods: not the run's store key, not the lab's (issue 14)."""
    labs = replace(CONFIG, lab_keys=True)
    own = spec(store={"apiKeySecret": {"name": "run-key"}})

    def env(s, config, role):
        body = build_job(RUN, s, config, CPU_TASK, JobRequest(role, "00001"))
        return {e["name"]: e for e in container(body)["env"]}

    lab_ref = {"secretKeyRef": {"name": "kubevolve-store", "key": "api-key"}}
    for role in ("propose", "analyze"):
        assert env(spec(), labs, role)["KUBEVOLVE_STORE_API_KEY"]["valueFrom"] == lab_ref
        assert (
            env(own, labs, role)["KUBEVOLVE_STORE_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "run-key"
        )
        assert "KUBEVOLVE_STORE_API_KEY" not in env(spec(), CONFIG, role)
    for s, config in ((spec(), labs), (own, labs), (own, CONFIG)):
        assert "KUBEVOLVE_STORE_API_KEY" not in env(s, config, "evaluate")
    tj = build_trainjob(
        RUN,
        spec(jobs={"evaluate": {"trainJob": {"numNodes": 2}}}, store={"apiKeySecret": {"name": "k"}}),
        labs,
        GPU_TASK,
        JobRequest("evaluate", "00001"),
    )
    assert not [e for e in tj["spec"]["trainer"]["env"] if e["name"] == "KUBEVOLVE_STORE_API_KEY"]


def test_a_labs_store_role_reaches_its_own_tenant_only():
    """The Weaviate role behind a lab's key (store/weaviate/access.py): objects and tenants of that tenant only,
    nothing that creates, changes or drops a collection, and no user or role administration."""
    from kubevolve.store.weaviate.access import lab_permissions, lab_principal

    perms = lab_permissions("Kubevolve", "lab-a")
    assert lab_principal("lab-a") == "kubevolve-lab-lab-a"
    kinds = {f"Kubevolve{k}" for k in ("Run", "Node", "Insight", "Cognition")}
    by_type: dict[str, list] = {}
    for p in perms:
        by_type.setdefault(type(p).__name__, []).append(p)
    assert set(by_type) == {"_DataPermission", "_TenantsPermission", "_CollectionsPermission"}
    data = by_type["_DataPermission"]
    assert {p.collection for p in data if p.tenant == "lab-a"} == kinds
    assert [(p.collection, p.tenant, {a.value for a in p.actions}) for p in data if p.tenant != "lab-a"] == [
        ("KubevolveMeta", "*", {"read_data"})  # the schema version only: Meta is not multi-tenant
    ]
    assert {(p.collection, p.tenant) for p in by_type["_TenantsPermission"]} == {(k, "lab-a") for k in kinds}
    for p in by_type["_CollectionsPermission"]:
        assert {a.value for a in p.actions} == {"read_collections"}
