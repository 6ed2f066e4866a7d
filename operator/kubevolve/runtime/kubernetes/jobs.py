"""The Jobs a run is made of: what each pod runs (`kubevolve step ...`, the command a local shell would run),
with which image, labels, owner, resources and security settings.

Every step pod is hardened the same way, evaluation pods above all (they run untrusted candidate code):
no service-account token (the steps talk to the store, never to the Kubernetes API; the pods run as the
step ServiceAccount, `kubevolve-step` from the chart and `kubevolve lab create`, which has no rights), non-root uid, read-only
root filesystem with emptyDir scratch and /tmp, no privilege escalation, all capabilities dropped, the runtime
default seccomp profile, and resource limits. Only proposal and analysis pods see the LLM key and the store key;
no pod but the operator's has API credentials. `backoffLimit: 0`: the operator retries a failed Job itself, with backoff, so
that every attempt is a visible, named Job. A pod that Kubernetes itself takes away (a node drain, a
preemption, an eviction: its `DisruptionTarget` condition) is not such a failure: the `podFailurePolicy`
ignores it and the Job starts the pod again. `ttlSecondsAfterFinished` is a backstop for Jobs the operator
did not delete (it deletes finished Jobs itself once their follow-ups exist, and keeps failed ones for
`kubectl describe` until then).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.core.spec import RunSpec
from kubevolve.runtime.kubernetes import (
    API_VERSION,
    ATTEMPT_LABEL,
    CANDIDATE_LABEL,
    KIND,
    NODE_ANNOTATION,
    QUEUE_LABEL,
    ROLE_LABEL,
    RUN_LABEL,
    STORE_KEY,
    STORE_KEY_SECRET,
)
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.names import job_name, node_id, parse_key, run_label
from kubevolve.runtime.kubernetes.resources import TaskFacts, active_deadline, evaluation_gpus, pod_resources

JOB_TTL_SECONDS = 7 * 24 * 3600  # a finished Job the operator left behind goes a week after it finished
# node drains, preemptions and evictions are not the step's failure: the Job controller starts the pod again
POD_FAILURE_POLICY = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
SCRATCH = "/scratch"  # KUBEVOLVE_HOME in the pod: the evaluation workspace lives under it
WORKSPACE = f"{SCRATCH}/work"


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


def store_url(spec: RunSpec, config: OperatorConfig) -> str | None:
    return (spec.store.url if spec.store else None) or config.store_url


def step_command(run: RunRef, spec: RunSpec, config: OperatorConfig, req: JobRequest) -> list[str]:
    nid = node_id(run.name, req.key)
    command = ["kubevolve", "step", str(req.role), "--run", run.name]
    if req.role == Role.PROPOSE:  # proposal pods started together see one store: each draws by its own index
        command += ["--node-id", nid, "--index", str(parse_key(req.key)[0])]
    else:
        command += ["--node", nid]
    url = store_url(spec, config)
    command += (["--store", url] if url else []) + ["--tenant", run.namespace]
    if req.role == Role.EVALUATE:
        command += ["--workspace", WORKSPACE]
    if req.retry_of:
        command += ["--retry-of", req.retry_of]
    return command


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
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": run.name,
                "uid": run.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
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


def step_env(role: Role, spec: RunSpec, facts: TaskFacts, config: OperatorConfig) -> list[dict[str, Any]]:
    env = [
        {"name": "KUBEVOLVE_HOME", "value": SCRATCH},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},  # the root filesystem is read-only
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
    ]
    env += store_key_env(role, spec, config)
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


def container(run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest) -> dict:
    return {
        "name": "step",
        "image": image(req.role, spec, config, facts),
        "imagePullPolicy": spec.image_pull_policy or config.image_pull_policy,
        "command": step_command(run, spec, config, req),
        "workingDir": config.task_root,
        "env": step_env(req.role, spec, facts, config),
        "resources": pod_resources(req.role, spec, facts),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "scratch", "mountPath": SCRATCH},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        + ([{"name": "dshm", "mountPath": "/dev/shm"}] if _needs_shm(req.role, spec, facts) else []),
    }


def _needs_shm(role: Role, spec: RunSpec, facts: TaskFacts) -> bool:
    return role == Role.EVALUATE and evaluation_gpus(spec, facts) > 0  # NCCL and data loaders use /dev/shm


def volumes(role: Role, spec: RunSpec, config: OperatorConfig, facts: TaskFacts) -> list[dict[str, Any]]:
    out = [
        {"name": "scratch", "emptyDir": {"sizeLimit": config.scratch_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    if _needs_shm(role, spec, facts):
        out.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}})
    return out


def pod_spec(run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest) -> dict:
    overrides = getattr(spec.jobs, req.role, None) if spec.jobs else None
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
        "containers": [container(run, spec, config, facts, req)],
        "volumes": volumes(req.role, spec, config, facts),
    }
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
