"""An evaluation as a Kubeflow Trainer `TrainJob`, for candidates whose training spans several nodes.

Multi-node training is Trainer's job, not ours: the TrainJob names a training runtime (by default the
DeepSpeed runtime `deepspeed-distributed`, an MPI runtime whose launcher runs the trainer command once and
reaches the other nodes through `/etc/mpi/hostfile`). Its trainer command is the same `kubevolve step
evaluate` a Job runs, so one process writes the candidate's result; the task's evaluator starts the ranks
(its launcher, with the MPI hostfile for several nodes). Kueue admits TrainJobs through the same queue label.
Pod hardening of TrainJob pods comes from the runtime's pod template, which the cluster's admins own.
"""

from __future__ import annotations

from typing import Any

from kubevolve.core.kinds import Role
from kubevolve.core.spec import RunSpec
from kubevolve.runtime.kubernetes import TRAINER_GROUP, TRAINER_VERSION
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.jobs import JobRequest, RunRef, image, metadata, step_command, step_env
from kubevolve.runtime.kubernetes.resources import TaskFacts, evaluation_gpus, pod_resources


def build_trainjob(
    run: RunRef, spec: RunSpec, config: OperatorConfig, facts: TaskFacts, req: JobRequest
) -> dict:
    ev = spec.jobs.evaluate if spec.jobs else None
    tj = ev.train_job if ev else None
    if tj is None:
        raise ValueError("spec.jobs.evaluate.trainJob is not set")
    gpus = evaluation_gpus(spec, facts)
    trainer: dict[str, Any] = {
        "image": image(Role.EVALUATE, spec, config, facts),
        "command": step_command(run, spec, config, req),
        "env": step_env(Role.EVALUATE, spec, facts)
        + [{"name": "KUBEVOLVE_NUM_NODES", "value": str(tj.num_nodes)}],
        "numNodes": tj.num_nodes,
        "resourcesPerNode": pod_resources(Role.EVALUATE, spec, facts),
    }
    if tj.num_proc_per_node or gpus:
        trainer["numProcPerNode"] = tj.num_proc_per_node or gpus
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "metadata": metadata(run, spec, req),
        "spec": {
            "runtimeRef": {"name": tj.runtime, "kind": tj.runtime_kind, "apiGroup": TRAINER_GROUP},
            "trainer": trainer,
        },
    }


def uses_trainjob(spec: RunSpec, role: Role) -> bool:
    return role == Role.EVALUATE and bool(spec.jobs and spec.jobs.evaluate and spec.jobs.evaluate.train_job)
