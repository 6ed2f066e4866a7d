"""What Kubeflow Trainer v2.3.0 makes of a TrainJob on an MPI TrainingRuntime, as far as the tests need it: the
pod template of each of its JobSet's replicated Jobs, and the hostfile ConfigMap and ssh key Secret its MPI
plugin adds. Followed from Trainer's sources (pkg/runtime/core/trainingruntime.go: runtime patches merged
into the template, resourcesPerNode; plugins/mpi/mpi.go: the ssh and hostfile volumes, mounted in `node`
containers only, OpenMPI's variables in the launcher's; plugins/jobset/builder.go: trainer.image, command and
args on the launcher's `node` container, trainer.env on every `node` container of a trainer Job, and with
runLauncherAsNode of the `node` Job too; jobset.go: the webhook's refusals of a patch). Not a controller:
no JobSet, no Services, no status; the kmock kubelet (kubelet.py) runs the launcher pod it describes.

The strategic merge of a patch is the part Trainer leaves to Kubernetes' strategicpatch: lists of named
things (replicated Jobs, containers, volumes, env) merge by name, volume mounts by mount path, maps merge,
anything else is replaced.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any

from kubevolve.errors import KubevolveError

ANCESTOR = "trainer.kubeflow.org/trainjob-ancestor-step"
LAUNCHER, NODE = "launcher", "node"
JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_NAME = "batch.kubernetes.io/job-name"
MERGE_KEYS = {"replicatedJobs": "name", "containers": "name", "volumes": "name", "env": "name"}
MERGE_KEYS |= {"volumeMounts": "mountPath", "initContainers": "name"}


class TrainJobRefused(KubevolveError, ValueError):
    """What Trainer's webhook refuses (the TrainJob would never be created on a cluster)."""


@dataclass
class JobSetPods:
    """The replicated Jobs' pods (name -> how many, their template) and the objects the MPI plugin makes."""

    pods: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        by = MERGE_KEYS[key]
        out_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            match = [i for i, old in enumerate(out_list) if old.get(by) == item.get(by)]
            if match:
                out_list[match[0]] = _merge(out_list[match[0]], item, key)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _upsert(items: list[dict[str, Any]], new: list[dict[str, Any]], by: str = "name") -> list[dict[str, Any]]:
    out = [i for i in items if i.get(by) not in {n.get(by) for n in new}]
    return out + copy.deepcopy(new)


def _check_patches(trainjob: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> None:
    for patch in trainjob["spec"].get("runtimePatches") or []:
        replicated = (((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}).get(
            "replicatedJobs"
        ) or []
        for job in replicated:
            if job["name"] not in jobs:
                raise TrainJobRefused(
                    "must not have replicated job that doesn't exist in the runtime job template"
                )
            names = {
                c["name"] for c in jobs[job["name"]]["template"]["spec"]["template"]["spec"]["containers"]
            }
            pod = ((job.get("template") or {}).get("spec") or {}).get("template") or {}
            for c in (pod.get("spec") or {}).get("containers") or []:
                if c["name"] not in names:
                    raise TrainJobRefused(
                        f"must not have container that doesn't exist in the runtime job {job['name']}"
                    )
                if c.get("env") and c["name"] == NODE:
                    raise TrainJobRefused(
                        "must not have envs for the dataset-initializer, model-initializer, node containers"
                    )


def jobset_pods(trainjob: dict[str, Any], runtime: dict[str, Any]) -> JobSetPods:
    """The pods of the TrainJob's JobSet on `runtime` (a TrainingRuntime), as Trainer v2.3.0 builds them."""
    name, namespace = trainjob["metadata"]["name"], trainjob["metadata"]["namespace"]
    spec, trainer = trainjob["spec"], trainjob["spec"].get("trainer") or {}
    template = copy.deepcopy(runtime["spec"]["template"]["spec"])
    _check_patches(trainjob, {j["name"]: j for j in template["replicatedJobs"]})
    for patch in spec.get("runtimePatches") or []:
        patched = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec")
        if patched:
            template = _merge(template, patched)
    mpi = (runtime["spec"].get("mlPolicy") or {}).get("mpi") or {}
    as_node = bool(mpi.get("runLauncherAsNode"))
    nodes = int(trainer.get("numNodes") or (runtime["spec"].get("mlPolicy") or {}).get("numNodes") or 1)
    slots = int(trainer.get("numProcPerNode") or mpi.get("numProcPerNode") or 1)
    out = JobSetPods()
    hosts: list[str] = []
    for job in template["replicatedJobs"]:
        labels = (job["template"].get("metadata") or {}).get("labels") or {}
        trainer_job = labels.get(ANCESTOR) == "trainer"
        pod = copy.deepcopy(job["template"]["spec"]["template"])
        pod_spec = pod["spec"]
        count = 1 if trainer_job else (max(nodes - 1, 1) if as_node else nodes)
        volumes = [_secret_volume(name)] + ([_hostfile_volume(name)] if job["name"] == LAUNCHER else [])
        pod_spec["volumes"] = _upsert(pod_spec.get("volumes") or [], volumes)
        for c in pod_spec["containers"]:
            if c["name"] != NODE:
                continue
            if trainer_job:
                for k in ("image", "command", "args"):
                    if k in trainer:
                        c[k] = copy.deepcopy(trainer[k])
            if trainer_job or (as_node and job["name"] == NODE):
                c["env"] = _upsert(c.get("env") or [], trainer.get("env") or [])
                if "resourcesPerNode" in trainer:
                    c["resources"] = _merge(c.get("resources") or {}, trainer["resourcesPerNode"])
            mounts = [{"name": "mpi-ssh-auth", "mountPath": mpi.get("sshAuthMountPath", "/root/.ssh")}]
            if job["name"] == LAUNCHER:
                mounts.append({"name": "mpi-hostfile", "mountPath": "/etc/mpi"})
                c["env"] = _upsert(c.get("env") or [], _openmpi_env(slots))
            c["volumeMounts"] = _upsert(c.get("volumeMounts") or [], mounts, "mountPath")
        pod.setdefault("metadata", {})["labels"] = {
            **((pod.get("metadata") or {}).get("labels") or {}),
            JOBSET_NAME: name,
            REPLICATED_JOB: job["name"],
            JOB_NAME: f"{name}-{job['name']}-0",
        }
        out.pods[job["name"]] = (count, pod)
        if job["name"] == NODE or (as_node and job["name"] == LAUNCHER):
            hosts += [f"{name}-{job['name']}-0-{i}.{name} slots={slots}" for i in range(count)]
    owner = {
        "apiVersion": trainjob["apiVersion"],
        "kind": "TrainJob",
        "name": name,
        "uid": trainjob["metadata"].get("uid", ""),
    }
    meta = {
        "namespace": namespace,
        "ownerReferences": [owner | {"controller": True, "blockOwnerDeletion": True}],
    }
    out.objects = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-mpi-hostfile", **meta},
            "data": {"hostfile": "".join(h + "\n" for h in hosts)},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/ssh-auth",
            "immutable": True,
            "metadata": {"name": f"{name}-mpi-ssh-auth", **meta},
            "data": {  # a stand-in key: nothing here logs in with it
                "ssh-privatekey": base64.b64encode(b"-----BEGIN EC PRIVATE KEY-----\n").decode(),
                "ssh-publickey": base64.b64encode(b"ecdsa-sha2-nistp521 AAAA\n").decode(),
            },
        },
    ]
    return out


def _secret_volume(name: str) -> dict[str, Any]:
    items = [
        {"key": "ssh-privatekey", "path": "id_rsa", "mode": 0o640},
        {"key": "ssh-publickey", "path": "id_rsa.pub", "mode": 0o644},
        {"key": "ssh-publickey", "path": "authorized_keys", "mode": 0o644},
    ]
    return {
        "name": "mpi-ssh-auth",
        "secret": {"secretName": f"{name}-mpi-ssh-auth", "defaultMode": 0o400, "items": items},
    }


def _hostfile_volume(name: str) -> dict[str, Any]:
    items = [{"key": "hostfile", "path": "hostfile", "mode": 0o444}]
    return {"name": "mpi-hostfile", "configMap": {"name": f"{name}-mpi-hostfile", "items": items}}


def _openmpi_env(slots: int) -> list[dict[str, Any]]:
    return [
        {"name": "OMPI_MCA_orte_default_hostfile", "value": "/etc/mpi/hostfile"},
        {"name": "OMPI_MCA_orte_keep_fqdn_hostnames", "value": "true"},
        {"name": "OMPI_MCA_orte_set_default_slots", "value": str(slots)},
        {"name": "OMPI_MCA_plm_rsh_args", "value": "-o ConnectionAttempts=10"},
    ]
