"""An evaluation as a Kubeflow Trainer `TrainJob`, for candidates whose training spans several nodes.

Written against Trainer v2.2 and later (API trainer.kubeflow.org/v1alpha1; checked in the sources of v2.3.0),
where a TrainJob has `runtimePatches` and `activeDeadlineSeconds` (v2.0 had podSpecOverrides, v2.1
podTemplateOverrides, neither of which this builds). What Trainer does with a TrainJob, from those sources:

- `trainer.image`, `command` and `args` reach only the launcher's `node` container (the replicated Job
  labelled `trainer.kubeflow.org/trainjob-ancestor-step: trainer`; pkg/runtime/framework/plugins/jobset/
  builder.go). `trainer.env` and `resourcesPerNode` reach the node pods too (MPI with runLauncherAsNode).
  A runtime patch cannot set a container's image or command (ContainerPatch has env, volumeMounts and
  securityContext only). So the image and command of the node pods come from the runtime alone, and the
  stock `deepspeed-distributed` runtime runs its own image as uid 1000: no kubevolve, no task.
- The TrainJob's labels stay on the TrainJob: pods get the runtime template's labels and the patches'.
- The JobSet is named after the TrainJob, and its pods `<name>-<job>-<i>-<j>-<random>`: names.trainjob_name
  keeps those within 63 characters, which JobSet's webhook checks.

Hence, by default, each run gets its own namespaced `TrainingRuntime` (`build_runtime`): OpenMPI with the
launcher as a node, both replicated Jobs running the run's image (the trainer image carries sshd and the
ssh settings, images/trainer/ssh), without a service-account token or service links, its name a hash of
its content. Each TrainJob names it and patches in what differs per TrainJob and what every kubevolve pod
has (`runtime_patch`): the pod labels (so the evaluation NetworkPolicy selects every pod), `/scratch` and
`/tmp` on emptyDirs (a read-only root filesystem), `/dev/shm` for GPUs, and the non-root security
contexts. `spec.activeDeadlineSeconds` bounds it as `activeDeadlineSeconds` bounds a Job.

A run may name a runtime of the cluster's admins instead (`trainJob.runtime`): it gets the same patch, so it
must have MPI-style `launcher` and `node` Jobs whose `node` containers run kubevolve's image; its token and
image are its owners' to set (a patch cannot).

The trainer command is the same `kubevolve step evaluate` a Job runs, so one process (the launcher) writes
the candidate's result; the task's evaluator starts the ranks over `/etc/mpi/hostfile`. Kueue admits
TrainJobs through the same queue label.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.core.spec import RunSpec
from kubevolve.runtime.kubernetes import QUEUE_LABEL, TRAINER_GROUP, TRAINER_VERSION
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.jobs import (
    JobRequest,
    RunRef,
    container,
    image,
    labels,
    metadata,
    pod_spec,
    step_command,
    step_env,
)
from kubevolve.runtime.kubernetes.names import runtime_name, trainjob_name
from kubevolve.runtime.kubernetes.resources import TaskFacts, active_deadline, evaluation_gpus, pod_resources

PATCH_MANAGER = "kubevolve.io/operator"  # a TrainJob's runtimePatches are keyed by their manager
LAUNCHER, NODE = "launcher", "node"  # Trainer's names of the MPI Jobs (and `node` of their container)
SSH_DIR = "/etc/kubevolve/ssh"  # where Trainer mounts the MPI ssh key Secret; images/trainer/ssh reads it
SSH_PORT = 2222
SSHD = ["/usr/sbin/sshd", "-De", "-f", "/etc/kubevolve/sshd_config"]


def uses_trainjob(spec: RunSpec, role: Role) -> bool:
    return role == Role.EVALUATE and bool(spec.jobs and spec.jobs.evaluate and spec.jobs.evaluate.train_job)


def _train_job_spec(spec: RunSpec) -> Any:
    ev = spec.jobs.evaluate if spec.jobs else None
    tj = ev.train_job if ev else None
    if tj is None:
        raise ValueError("spec.jobs.evaluate.trainJob is not set")
    return tj


def build_runtime(run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts) -> dict[str, Any]:
    """The run's own TrainingRuntime (named by a hash of its spec), owned by the run; None-free JSON."""
    pod = pod_spec(run, spec, config, facts, JobRequest(Role.EVALUATE, "00000"))
    step = pod["containers"][0]
    node_container = {
        "name": NODE,
        "image": step["image"],
        "imagePullPolicy": step["imagePullPolicy"],
        "workingDir": step["workingDir"],
        "command": SSHD,  # the launcher's is replaced by trainer.command
        "ports": [{"name": "ssh", "containerPort": SSH_PORT}],
        "readinessProbe": {"tcpSocket": {"port": SSH_PORT}, "periodSeconds": 2},
    }
    base_pod = {k: v for k, v in pod.items() if k not in ("containers", "volumes")}

    def replicated(name: str, extra: dict[str, Any]) -> dict[str, Any]:
        job: dict[str, Any] = {
            "name": name,
            "template": {
                **extra,
                "spec": {
                    "template": {"spec": {**copy.deepcopy(base_pod), "containers": [dict(node_container)]}}
                },
            },
        }
        if name == LAUNCHER:
            job["dependsOn"] = [{"name": NODE, "status": "Ready"}]
        return job

    template = {
        "spec": {
            "network": {"publishNotReadyAddresses": True},
            "successPolicy": {"operator": "All", "targetReplicatedJobs": [LAUNCHER]},
            "replicatedJobs": [
                replicated(NODE, {}),
                replicated(
                    LAUNCHER,
                    {"metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}}},
                ),
            ],
        }
    }
    runtime_spec = {
        "mlPolicy": {
            "numNodes": 1,
            "mpi": {
                "numProcPerNode": 1,
                "mpiImplementation": "OpenMPI",
                "sshAuthMountPath": SSH_DIR,
                "runLauncherAsNode": True,
            },
        },
        "template": template,
    }
    content = json.dumps(runtime_spec, sort_keys=True)
    meta = metadata(run, spec, JobRequest(Role.EVALUATE, "00000"))
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainingRuntime",
        "metadata": {
            "name": runtime_name(run.name, content),
            "namespace": run.namespace,
            "labels": {
                k: v
                for k, v in meta["labels"].items()
                if k.startswith("app.kubernetes.io/") or k == "kubevolve.io/run"
            },
            "ownerReferences": meta["ownerReferences"],
        },
        "spec": runtime_spec,
    }


def runtime_patch(
    run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest
) -> dict[str, Any]:
    """What every pod of the TrainJob gets on top of the runtime: labels, scratch volumes, security contexts."""
    pod = pod_spec(run, spec, config, facts, req)
    step = container(run, spec, config, facts, req)
    pod_labels = {k: v for k, v in labels(run, spec, req).items() if k != QUEUE_LABEL}
    pod_patch = {
        "securityContext": pod["securityContext"],
        "volumes": pod["volumes"],
        "containers": [
            {"name": NODE, "volumeMounts": step["volumeMounts"], "securityContext": step["securityContext"]}
        ],
    }
    return {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": name,
                            "template": {
                                "spec": {
                                    "template": {
                                        "metadata": {"labels": dict(pod_labels)},
                                        "spec": copy.deepcopy(pod_patch),
                                    }
                                }
                            },
                        }
                        for name in (NODE, LAUNCHER)
                    ]
                }
            }
        },
    }


def build_trainjob(
    run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest
) -> dict[str, Any]:
    tj = _train_job_spec(spec)
    gpus = evaluation_gpus(spec, facts)
    trainer: dict[str, Any] = {
        "image": image(Role.EVALUATE, spec, config, facts),
        "command": step_command(run, spec, config, req),
        "env": step_env(Role.EVALUATE, spec, facts, config)
        + [{"name": "KUBEVOLVE_NUM_NODES", "value": str(tj.num_nodes)}],
        "numNodes": tj.num_nodes,
        "resourcesPerNode": pod_resources(Role.EVALUATE, spec, facts),
    }
    if tj.num_proc_per_node or gpus:
        trainer["numProcPerNode"] = tj.num_proc_per_node or gpus
    if tj.runtime:
        ref = {"name": tj.runtime, "kind": tj.runtime_kind, "apiGroup": TRAINER_GROUP}
    else:
        runtime = build_runtime(run, spec, config, facts)
        ref = {"name": runtime["metadata"]["name"], "kind": "TrainingRuntime", "apiGroup": TRAINER_GROUP}
    meta = metadata(run, spec, req)
    meta["name"] = trainjob_name(run.name, req.key, req.attempt)
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "metadata": meta,
        "spec": {
            "runtimeRef": ref,
            "trainer": trainer,
            "runtimePatches": [runtime_patch(run, spec, config, facts, req)],
            "activeDeadlineSeconds": active_deadline(Role.EVALUATE, spec, facts),
        },
    }
