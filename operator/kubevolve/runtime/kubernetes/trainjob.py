"""An evaluation as a Kubeflow Trainer `TrainJob`, for candidates whose training spans several nodes.

Written against Trainer v2.2 and later (API trainer.kubeflow.org/v1alpha1; checked in the sources of v2.3.0),
where a TrainJob has `runtimePatches` and `activeDeadlineSeconds` (v2.0 had podSpecOverrides, v2.1
podTemplateOverrides, neither of which this builds). What Trainer does with a TrainJob, from those sources:

- `trainer.image`, `command` and `args` reach only the launcher's `node` container (the replicated Job
  labelled `trainer.kubeflow.org/trainjob-ancestor-step: trainer`; pkg/runtime/framework/plugins/jobset/
  builder.go). `trainer.env` and `resourcesPerNode` reach the node pods' `node` container too (MPI with
  runLauncherAsNode). A runtime patch is a strategic merge into the runtime's JobSet template: it may add pod
  labels and volumes, and a container's volumeMounts and securityContext, but no container (Trainer's
  webhook refuses a patch naming a container the runtime lacks) and no env on a `node` container.
- The MPI plugin adds the per-TrainJob ssh key Secret (volume `mpi-ssh-auth`) to both pods and the hostfile
  ConfigMap (`mpi-hostfile`) to the launcher, but mounts them only in containers named `node`. The hostfile
  names hosts by their JobSet DNS names (`<name>-<job>-<i>-<j>.<name>`, a headless Service).
- The TrainJob's labels stay on the TrainJob: pods get the runtime template's labels and the patches'.
- The JobSet is named after the TrainJob, and its pods `<name>-<job>-<i>-<j>-<random>`: names.trainjob_name
  keeps those within 63 characters, which JobSet's webhook checks.

Hence, by default, each run gets its own namespaced `TrainingRuntime` (`build_runtime`): OpenMPI with the
launcher as a node, its name a hash of its content, the run's image everywhere, without a service-account
token or service links. Its launcher pod is an evaluation Job's pod (jobs.py, the same container builders):
its `node` container is the judge (Trainer gives it the judge's step as `trainer.command`; the run's
judge-seed Secret is in the template, the only place it can be put, as a patch may not set a `node`
container's env), and its `candidate` container runs the zygote, with the shared `sandbox` volume for the
judge's socket and, to start the ranks with mpirun, the ssh key and the hostfile, nothing else secret. It
runs as a uid of its own (jobs.candidate_uid of the TrainJob's name, patched in per TrainJob), not the
judge's. ssh exits when its uid has no passwd entry, so its environment preloads nss_wrapper (NSS_WRAPPER)
with passwd and group files its zygote writes before it connects to the judge (zygote.write_identity), and
it logs in as the user the node pods' unprivileged sshd runs as, the only one that sshd logs in
(images/trainer/ssh). The candidate's ranks run there. The judge listens on no port: nothing can reach it
but through the socket.

Each TrainJob names the runtime and patches in what differs per TrainJob and what every kubevolve pod has
(`runtime_patch`): the pod labels (`kubevolve.io/network: none`, so the isolation NetworkPolicy isolates every
pod; the TrainJob's name and which of its Jobs, for its peer NetworkPolicy, netpol.py, and for the operator to
find the launcher's judge, results.py), the volumes (`/scratch` and `/tmp` on emptyDirs under a read-only root
filesystem, the candidate's ConfigMap, the shared sandbox, `/dev/shm` for GPUs), and the non-root security
contexts. No pod has a store key or a route to the store: the operator collects the judge's published result
as it does a Job's. `spec.activeDeadlineSeconds` bounds it as `activeDeadlineSeconds` bounds a Job.

A run may name a runtime of the cluster's admins instead (`trainJob.runtime`): it gets the same patch and the
resources through `resourcesPerNode`, so it must have MPI-style `launcher` and `node` Jobs whose `node`
containers run kubevolve's image; its token and image are its owners' to set (a patch cannot). It has no
`candidate` container and no seed, so it serves only tasks without a judge (the candidate inside the judge's
process); a judged task on it is refused (policy.py).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.core.spec import RunSpec
from kubevolve.runtime.kubernetes import (
    MPI_JOB_LABEL,
    NETWORK_LABEL,
    QUEUE_LABEL,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_LABEL,
)
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.jobs import (
    CANDIDATE,
    JUDGE,
    SANDBOX,
    JobRequest,
    RunRef,
    container,
    evaluate_command,
    image,
    labels,
    metadata,
    object_name,
    pod_spec,
    step_env,
)
from kubevolve.runtime.kubernetes.names import runtime_name
from kubevolve.runtime.kubernetes.resources import TaskFacts, active_deadline, evaluation_gpus, pod_resources

PATCH_MANAGER = "kubevolve.io/operator"  # a TrainJob's runtimePatches are keyed by their manager
LAUNCHER, NODE = "launcher", "node"  # Trainer's names of the MPI Jobs (and `node` of their container)
SSH_DIR = "/etc/kubevolve/ssh"  # where Trainer mounts the MPI ssh key Secret; images/trainer/ssh reads it
SSH_VOLUME, HOSTFILE_VOLUME = "mpi-ssh-auth", "mpi-hostfile"  # the volumes Trainer's MPI plugin adds
HOSTFILE_DIR = "/etc/mpi"  # where Trainer mounts the hostfile in the launcher (launcher.MPI_HOSTFILE)
SSH_PORT = 2222
SSHD = ["/usr/sbin/sshd", "-De", "-f", "/etc/kubevolve/sshd_config"]
TEMPLATE_KEY = "00000"  # the request the run's runtime is built from: what differs per TrainJob is patched
IDENTITY = f"{SANDBOX}/.identity"  # the candidate's passwd and group, written by its zygote (write_identity)
NSS_WRAPPER = [  # ssh exits when its uid has no passwd entry: nss_wrapper (in the image) gives the candidate's
    {"name": "LD_PRELOAD", "value": "libnss_wrapper.so"},
    {"name": "NSS_WRAPPER_PASSWD", "value": f"{IDENTITY}/passwd"},
    {"name": "NSS_WRAPPER_GROUP", "value": f"{IDENTITY}/group"},
]


def _train_job_spec(spec: RunSpec) -> Any:
    ev = spec.jobs.evaluate if spec.jobs else None
    tj = ev.train_job if ev else None
    if tj is None:
        raise ValueError("spec.jobs.evaluate.trainJob is not set")
    return tj


def launcher_pods(name: str) -> dict[str, str]:
    """The labels of the TrainJob `name`'s launcher pods, where its judge publishes the result."""
    return {TRAINJOB_LABEL: name, MPI_JOB_LABEL: LAUNCHER}


def _nodes_env(spec: RunSpec) -> dict[str, str]:
    return {"name": "KUBEVOLVE_NUM_NODES", "value": str(_train_job_spec(spec).num_nodes)}


def _containers(
    run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """The evaluation pod (jobs.py), the launcher's containers made from its, and the node pods' container."""
    pod = pod_spec(run, spec, config, facts, req)
    by_name = {c["name"]: c for c in pod["containers"]}
    judge = {k: v for k, v in by_name[JUDGE].items() if k != "command"}  # trainer.command sets it
    launcher = [{**judge, "name": NODE}]
    candidate = by_name.get(CANDIDATE)
    if candidate is not None:
        ssh = [
            {"name": SSH_VOLUME, "mountPath": SSH_DIR, "readOnly": True},
            {"name": HOSTFILE_VOLUME, "mountPath": HOSTFILE_DIR, "readOnly": True},
        ]
        launcher.append(
            candidate
            | {
                "env": candidate["env"] + [_nodes_env(spec)] + NSS_WRAPPER,
                "volumeMounts": candidate["volumeMounts"] + ssh,
            }
        )
    step = container(run, spec, config, facts, req)
    node = {
        "name": NODE,
        **{k: step[k] for k in ("image", "imagePullPolicy", "workingDir", "resources", "securityContext")},
        "command": SSHD,
        "env": step_env(Role.EVALUATE, spec, facts, config),
        "ports": [{"name": "ssh", "containerPort": SSH_PORT}],
        "readinessProbe": {"tcpSocket": {"port": SSH_PORT}, "periodSeconds": 2},
        "volumeMounts": step["volumeMounts"],
    }
    return pod, launcher, node


def build_runtime(run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts) -> dict[str, Any]:
    """The run's own TrainingRuntime (named by a hash of its spec), owned by the run; None-free JSON."""
    req = JobRequest(Role.EVALUATE, TEMPLATE_KEY)
    pod, launcher, node = _containers(run, spec, config, facts, req)
    base_pod = {k: v for k, v in pod.items() if k not in ("containers", "volumes")}

    def replicated(name: str, containers: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
        job: dict[str, Any] = {
            "name": name,
            "template": {
                **extra,
                "spec": {"template": {"spec": {**copy.deepcopy(base_pod), "containers": containers}}},
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
                replicated(NODE, [node], {}),
                replicated(
                    LAUNCHER,
                    launcher,
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
    meta = metadata(run, spec, req)
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
    """What every pod of the TrainJob gets on top of the runtime: labels, volumes, security contexts."""
    pod, launcher, node = _containers(run, spec, config, facts, req)
    name = object_name(run, spec, req)
    pod_labels = {k: v for k, v in labels(run, spec, req).items() if k != QUEUE_LABEL}
    pod_labels |= {NETWORK_LABEL: "none", TRAINJOB_LABEL: name}

    def patch(job: str, step: dict[str, Any]) -> dict[str, Any]:
        mounted = {m["name"] for m in step["volumeMounts"]}
        pod_patch = {
            "securityContext": pod["securityContext"],
            "volumes": [v for v in pod["volumes"] if v["name"] in mounted],
            "containers": [
                {
                    "name": NODE,
                    "volumeMounts": step["volumeMounts"],
                    "securityContext": step["securityContext"],
                }
            ],
        }
        if job == LAUNCHER:  # the candidate's volumes too (the sandbox it shares with the judge)
            pod_patch["volumes"] = pod["volumes"]
            # and its uid: this TrainJob's own, as an evaluation Job's is (jobs.candidate_uid)
            for c in launcher[1:]:
                pod_patch["containers"].append({"name": c["name"], "securityContext": c["securityContext"]})
        return {
            "name": job,
            "template": {
                "spec": {
                    "template": {
                        "metadata": {"labels": pod_labels | {MPI_JOB_LABEL: job}},
                        "spec": copy.deepcopy(pod_patch),
                    }
                }
            },
        }

    return {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {
            "template": {"spec": {"replicatedJobs": [patch(NODE, node), patch(LAUNCHER, launcher[0])]}}
        },
    }


def build_trainjob(
    run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest
) -> dict[str, Any]:
    tj = _train_job_spec(spec)
    gpus = evaluation_gpus(spec, facts)
    trainer: dict[str, Any] = {
        "image": image(Role.EVALUATE, spec, config, facts),
        "command": evaluate_command(run, req, facts.judged),  # the judge's step, publishing its result
        "env": step_env(Role.EVALUATE, spec, facts, config)
        + [_nodes_env(spec)],  # no secret: nodes get it too
        "numNodes": tj.num_nodes,
    }
    if tj.num_proc_per_node or gpus:
        trainer["numProcPerNode"] = tj.num_proc_per_node or gpus
    if tj.runtime:
        ref = {"name": tj.runtime, "kind": tj.runtime_kind, "apiGroup": TRAINER_GROUP}
        # Trainer gives these to the `node` containers; the run's own runtime sizes each container itself
        trainer["resourcesPerNode"] = pod_resources(Role.EVALUATE, spec, facts)
    else:
        runtime = build_runtime(run, spec, config, facts)
        ref = {"name": runtime["metadata"]["name"], "kind": "TrainingRuntime", "apiGroup": TRAINER_GROUP}
    meta = metadata(run, spec, req)
    meta["name"] = object_name(run, spec, req)
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
