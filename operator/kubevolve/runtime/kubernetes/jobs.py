"""The Jobs a run is made of: what each pod runs (`kubevolve step ...`, the command a local shell would run),
with which image, labels, owner, resources and security settings.

Every step pod is hardened the same way: no service-account token (the steps talk to the store, never to
the Kubernetes API; the pods run as the step ServiceAccount, `kubevolve-step` from the chart and `kubevolve
lab create`, which has no rights), non-root uid, read-only root filesystem with emptyDir scratch and /tmp, no
privilege escalation, all capabilities dropped, the runtime default seccomp profile, and resource limits.
Only proposal and analysis pods see the LLM key and the store key; no pod but the operator's has API
credentials. `backoffLimit: 0`: the operator retries a failed Job itself, with backoff, so that every attempt
is a visible, named Job. A pod that Kubernetes itself takes away (a node drain, a preemption, an eviction: its
`DisruptionTarget` condition) is not such a failure: the `podFailurePolicy` ignores it and the Job starts the
pod again. `ttlSecondsAfterFinished` is a backstop for Jobs the operator did not delete (it deletes finished
Jobs itself once their follow-ups exist, and keeps failed ones for `kubectl describe` until then).

Evaluation pods run untrusted candidate code, and hold nothing a candidate could use: no store key, no route
anywhere (the isolation NetworkPolicy selects every pod labelled `kubevolve.io/role: evaluate`). They are given
the candidate in a ConfigMap and publish their result for the operator to store (handover.py, results.py).
A multi-node evaluation (a TrainJob, trainjob.py) is built from the same containers.
A judged task's evaluation pod has two containers (the pod layout): `judge` runs `kubevolve step evaluate`
with the task's judge, holds the run's judge seed (a Secret) and the candidate's ConfigMap, and publishes the
result; `candidate` runs only the zygote that forks the candidate's processes, as a uid of its own, with no
Secret, no mounted input, no environment of the judge's and its own pid namespace (processes of one
container cannot see or signal the other's). They talk over a Unix socket in the `sandbox` emptyDir, the one
volume they share, which is also the candidates' scratch: memory-backed and sized to the task's largest
`maxDiskMb`, so the kernel bounds the candidate's files and the judge counts them exactly. A legacy task (no runner) evaluates in one `judge`
container, the candidate inside the evaluator's process as ever: it can forge its own score, nothing else.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.core.spec import RunSpec
from kubevolve.runtime.kubernetes import (
    ATTEMPT_LABEL,
    CANDIDATE_LABEL,
    NETWORK_LABEL,
    NODE_ANNOTATION,
    QUEUE_LABEL,
    ROLE_LABEL,
    RUN_LABEL,
    STORE_KEY,
    STORE_KEY_SECRET,
)
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.handover import INPUT_KEY, SEED_KEY, owner, seed_secret_name
from kubevolve.runtime.kubernetes.names import job_name, node_id, parse_key, run_label, trainjob_name
from kubevolve.runtime.kubernetes.resources import (
    TaskFacts,
    active_deadline,
    evaluation_gpus,
    evaluation_resources,
    pod_resources,
)
from kubevolve.sdk.judging import SEED_VARIABLE

JOB_TTL_SECONDS = 7 * 24 * 3600  # a finished Job the operator left behind goes a week after it finished
# node drains, preemptions and evictions are not the step's failure: the Job controller starts the pod again
POD_FAILURE_POLICY = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
SCRATCH = "/scratch"  # KUBEVOLVE_HOME in the pod: the evaluation workspace lives under it
WORKSPACE = f"{SCRATCH}/work"
JUDGE, CANDIDATE = "judge", "candidate"  # an evaluation pod's containers (the operator reads the judge's)
INPUT = "/input"  # the candidate's ConfigMap, in the judge's container only
SANDBOX = "/sandbox"  # the volume the judge and the candidate share: the candidates' scratch, the socket
ZYGOTE_SOCKET = f"{SANDBOX}/.judge/zygote.sock"
TERMINATION_LOG = "/dev/termination-log"
CANDIDATE_UIDS = (
    1 << 24
)  # a candidate container's uid is one of these above OperatorConfig.candidate_uid_base
HARDENED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True)
class RunRef:
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class JobRequest:
    """One Job to create: a role for a candidate, its attempt, and for a debug retry the failed node."""

    role: Role
    key: str
    attempt: int = 0
    retry_of: str | None = None
    # when the operator decided it (epoch seconds): a proposal step records its Job's wall time from it; not
    # part of what the request is
    queued_at: float | None = field(default=None, compare=False)


def store_url(spec: RunSpec, config: OperatorConfig) -> str | None:
    return (spec.store.url if spec.store else None) or config.store_url


def step_command(run: RunRef, spec: RunSpec, config: OperatorConfig, req: JobRequest) -> list[str]:
    """The step as it runs with the store (proposal, analysis)."""
    nid = node_id(run.name, req.key)
    command = ["kubevolve", "step", str(req.role), "--run", run.name]
    if req.role == Role.PROPOSE:  # proposal pods started together see one store: each draws by its own index
        command += ["--node-id", nid, "--index", str(parse_key(req.key)[0])]
        if req.queued_at is not None:
            command += ["--queued-at", f"{req.queued_at:.3f}"]
    else:
        command += ["--node", nid]
    url = store_url(spec, config)
    command += (["--store", url] if url else []) + ["--tenant", run.namespace]
    if req.role == Role.EVALUATE:
        command += ["--workspace", WORKSPACE]
    if req.retry_of:
        command += ["--retry-of", req.retry_of]
    return command


def evaluate_command(run: RunRef, req: JobRequest, judged: bool) -> list[str]:
    """An evaluation pod's step: the candidate from its ConfigMap, the result in its termination message."""
    command = ["kubevolve", "step", "evaluate", "--run", run.name, "--node", node_id(run.name, req.key)]
    command += ["--input", f"{INPUT}/{INPUT_KEY}", "--termination-log", TERMINATION_LOG]
    if judged:
        return command + ["--workspace", SANDBOX, "--candidate-socket", ZYGOTE_SOCKET]
    return command + ["--workspace", WORKSPACE]


def candidate_uid(config: OperatorConfig, job: str) -> int:
    """The candidate container's uid: its own, as far as a hash can make it (RLIMIT_NPROC counts every
    process of a uid on the node, other pods' included, and a uid no other pod uses is one nobody else's
    process limit is spent on)."""
    return config.candidate_uid_base + int(hashlib.sha256(job.encode()).hexdigest(), 16) % CANDIDATE_UIDS


def labels(run: RunRef, spec: RunSpec, req: JobRequest) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "kubevolve",
        "app.kubernetes.io/component": str(req.role),
        "app.kubernetes.io/managed-by": "kubevolve-operator",
        RUN_LABEL: run_label(run.name),
        ROLE_LABEL: str(req.role),
        CANDIDATE_LABEL: req.key,
        ATTEMPT_LABEL: str(req.attempt),
    }
    if spec.queue_name:
        out[QUEUE_LABEL] = spec.queue_name
    return out


def metadata(run: RunRef, spec: RunSpec, req: JobRequest) -> dict[str, Any]:
    return {
        "name": job_name(run.name, req.role, req.key, req.attempt),
        "namespace": run.namespace,
        "labels": labels(run, spec, req),
        "annotations": {NODE_ANNOTATION: node_id(run.name, req.key)},
        "ownerReferences": [owner(run.name, run.uid)],
    }


def _secret_env(name: str, secret: Any) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}}


def store_key_env(role: Role, spec: RunSpec, config: OperatorConfig) -> list[dict[str, Any]]:
    """The store key of a step pod: the run's own Secret, else the lab's (labkeys.py), and never for an
    evaluation pod: candidate code runs there."""
    if role == Role.EVALUATE:
        return []
    if spec.store and spec.store.api_key_secret:
        return [_secret_env("KUBEVOLVE_STORE_API_KEY", spec.store.api_key_secret)]
    if config.lab_keys:
        ref = {"secretKeyRef": {"name": STORE_KEY_SECRET, "key": STORE_KEY}}
        return [{"name": "KUBEVOLVE_STORE_API_KEY", "valueFrom": ref}]
    return []


def _base_env(home: str, tmp: str) -> list[dict[str, Any]]:
    return [
        {"name": "KUBEVOLVE_HOME", "value": home},
        {"name": "HOME", "value": tmp},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},  # the root filesystem is read-only
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
    ]


def step_env(role: Role, spec: RunSpec, facts: TaskFacts, config: OperatorConfig) -> list[dict[str, Any]]:
    """The environment of a step with the store: its key, and the LLM key for proposal and analysis."""
    env = _base_env(SCRATCH, "/tmp") + store_key_env(role, spec, config)
    if role != Role.EVALUATE and spec.llm.api_key_secret:
        env.append(_secret_env(spec.llm.api_key_env, spec.llm.api_key_secret))
    return env


def image(role: Role, spec: RunSpec, config: OperatorConfig, facts: TaskFacts) -> str:
    """The run's image, else the operator's GPU image for GPU evaluations, else its default image."""
    if spec.image:
        return spec.image
    if role == Role.EVALUATE and config.gpu_image and evaluation_gpus(spec, facts) > 0:
        return config.gpu_image
    return config.image


def handed_over(spec: RunSpec, role: Role) -> bool:
    """Whether the step's pod is an evaluation's (a Job's or a TrainJob's launcher): given its candidate,
    publishing its result, no store."""
    return role == Role.EVALUATE


def uses_trainjob(spec: RunSpec, role: Role) -> bool:
    """Whether the step runs as a Kubeflow Trainer TrainJob (trainjob.py) rather than a Job."""
    return role == Role.EVALUATE and bool(spec.jobs and spec.jobs.evaluate and spec.jobs.evaluate.train_job)


def object_name(run: RunRef, spec: RunSpec, req: JobRequest) -> str:
    """The name of the step's Job or TrainJob, which an evaluation's ConfigMap shares."""
    if uses_trainjob(spec, req.role):
        return trainjob_name(run.name, req.key, req.attempt)
    return job_name(run.name, req.role, req.key, req.attempt)


def _needs_shm(role: Role, spec: RunSpec, facts: TaskFacts) -> bool:
    return role == Role.EVALUATE and evaluation_gpus(spec, facts) > 0  # NCCL and data loaders use /dev/shm


def _mounts(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "mountPath": path} for name, path in pairs]


def container(run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest) -> dict:
    """The one container of a step with the store: a proposal's, an analysis's."""
    return {
        "name": "step",
        "image": image(req.role, spec, config, facts),
        "imagePullPolicy": spec.image_pull_policy or config.image_pull_policy,
        "command": step_command(run, spec, config, req),
        "workingDir": config.task_root,
        "env": step_env(req.role, spec, facts, config),
        "resources": pod_resources(req.role, spec, facts),
        "securityContext": copy.deepcopy(HARDENED),
        "volumeMounts": _mounts(
            ("scratch", SCRATCH),
            ("tmp", "/tmp"),
            *([("dshm", "/dev/shm")] if _needs_shm(req.role, spec, facts) else []),
        ),
    }


def evaluation_containers(
    run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest
) -> list[dict[str, Any]]:
    """The judge's container, and for a judged task the candidate's (see the module's docstring)."""
    common = {
        "image": image(Role.EVALUATE, spec, config, facts),
        "imagePullPolicy": spec.image_pull_policy or config.image_pull_policy,
        "workingDir": config.task_root,
    }
    shm = [("dshm", "/dev/shm")] if _needs_shm(Role.EVALUATE, spec, facts) else []
    judge: dict[str, Any] = {
        "name": JUDGE,
        **common,
        "command": evaluate_command(run, req, facts.judged),
        "env": _base_env(SCRATCH, "/tmp"),
        "securityContext": copy.deepcopy(HARDENED),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
    }
    mounts = [("scratch", SCRATCH), ("tmp", "/tmp")]
    if not facts.judged:
        judge["resources"] = pod_resources(Role.EVALUATE, spec, facts)
        judge["volumeMounts"] = _mounts(*mounts, *shm) + [
            {"name": "input", "mountPath": INPUT, "readOnly": True}
        ]
        return [judge]
    judge_resources, candidate_resources = evaluation_resources(spec, facts)
    seed = {"secretKeyRef": {"name": seed_secret_name(run.name), "key": SEED_KEY}}
    judge["env"] = judge["env"] + [{"name": SEED_VARIABLE, "valueFrom": seed}]
    if evaluation_gpus(spec, facts) > 0:
        # the GPUs are the candidate's: a CUDA image's NVIDIA_VISIBLE_DEVICES=all would show the judge's
        # container every GPU of the node where the NVIDIA runtime is the default
        judge["env"].append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})
    judge["resources"] = judge_resources
    judge["volumeMounts"] = _mounts(*mounts, ("sandbox", SANDBOX)) + [
        {"name": "input", "mountPath": INPUT, "readOnly": True}
    ]
    uid = candidate_uid(config, object_name(run, spec, req))
    threads = str(max(1, math.ceil(facts.cpu)))
    candidate = {
        "name": CANDIDATE,
        **common,
        "command": ["python", "-P", "-m", "kubevolve.loop.engineer.zygote", "--connect", ZYGOTE_SOCKET],
        "env": _base_env(SANDBOX, SANDBOX)
        + [{"name": "TMPDIR", "value": SANDBOX}]
        + [
            {"name": v, "value": threads}
            for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        ],
        "resources": candidate_resources,
        "securityContext": copy.deepcopy(HARDENED) | {"runAsUser": uid, "runAsGroup": uid},
        "volumeMounts": _mounts(("sandbox", SANDBOX), *shm),
    }
    return [judge, candidate]


def volumes(role: Role, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, job: str) -> list[dict]:
    out: list[dict[str, Any]] = [
        {"name": "scratch", "emptyDir": {"sizeLimit": config.scratch_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    if handed_over(spec, role):
        out.append({"name": "input", "configMap": {"name": job, "defaultMode": 0o444}})
        if facts.judged:
            # a tmpfs of the stage's disk size: the kernel refuses the write past it (ENOSPC), and the judge
            # counts it from the filesystem's own counters, which no file mode hides (disk_quota.tmpfs_usage)
            out.append(
                {"name": "sandbox", "emptyDir": {"medium": "Memory", "sizeLimit": f"{facts.disk_mb}Mi"}}
            )
    if _needs_shm(role, spec, facts):
        out.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}})
    return out


def pod_spec(run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest) -> dict:
    overrides = getattr(spec.jobs, req.role, None) if spec.jobs else None
    evaluation = handed_over(spec, req.role)
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_user,
            "fsGroup": config.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": (
            evaluation_containers(run, spec, config, facts, req)
            if evaluation
            else [container(run, spec, config, facts, req)]
        ),
        "volumes": volumes(req.role, spec, config, facts, object_name(run, spec, req)),
    }
    if evaluation:  # each container its own processes, the candidate's none of the judge's
        pod["shareProcessNamespace"] = False
    account = spec.service_account_name or config.step_service_account
    if account:
        pod["serviceAccountName"] = account
    pull_secrets = (
        [ref.name for ref in spec.image_pull_secrets]
        if spec.image_pull_secrets is not None
        else list(config.image_pull_secrets)
    )
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in pull_secrets]
    if overrides is not None:
        if overrides.node_selector:
            pod["nodeSelector"] = dict(overrides.node_selector)
        if overrides.tolerations:
            pod["tolerations"] = [
                t.model_dump(by_alias=True, exclude_none=True) for t in overrides.tolerations
            ]
        if overrides.priority_class_name:
            pod["priorityClassName"] = overrides.priority_class_name
    return pod


def build_job(run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest) -> dict:
    meta = metadata(run, spec, req)
    pod_labels = {k: v for k, v in meta["labels"].items() if k != QUEUE_LABEL}
    if handed_over(spec, req.role):
        pod_labels[NETWORK_LABEL] = "none"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "podFailurePolicy": copy.deepcopy(POD_FAILURE_POLICY),
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "activeDeadlineSeconds": active_deadline(req.role, spec, facts),
            "template": {
                "metadata": {"labels": pod_labels, "annotations": dict(meta["annotations"])},
                "spec": pod_spec(run, spec, config, facts, req),
            },
        },
    }
