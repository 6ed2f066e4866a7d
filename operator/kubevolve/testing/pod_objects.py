"""The Pod objects of the kmock kubelet's pods (kubelet.py): created as the Job controller (or JobSet's, for a
TrainJob's launcher) creates them, with its `batch.kubernetes.io/job-name` label, and finished as the
kubelet reports them: each container's exit code and termination message, and its log, which the emulator
serves at `pods/NAME/log`."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field

from kubevolve.runtime.kubernetes.results import JOB_NAME_LABEL
from kubevolve.testing import LOG_ANNOTATION, PODS, Api


@dataclass
class ContainerRun:
    """One container of a pod, as it ran."""

    name: str
    exit_code: int
    output: str
    message: str = ""  # its termination message
    pid: int | None = None
    uid: int | None = None  # the uid it ran as (None: this process's)


@dataclass
class PodRun:
    name: str
    containers: dict[str, ContainerRun] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.exit_code == 0 for c in self.containers.values())


def pod_spec_of(job: dict) -> dict:
    """The pod spec a Job's pods get (a TrainJob's launcher's: the kubelet puts it on the TrainJob's body as `_launcher`)."""
    if job["kind"] == "TrainJob":
        return (job.get("_launcher") or {}).get("spec") or {}
    return job["spec"]["template"]["spec"]


async def create_pod_object(api: Api, job: dict) -> str:
    """Create the Job's Pod object (as the Job controller does, or JobSet's for a TrainJob); its name."""
    meta = job["metadata"]
    template = job["_launcher"] if job["kind"] == "TrainJob" else job["spec"]["template"]
    owner = (template.get("metadata") or {}).get("labels", {}).get(JOB_NAME_LABEL, meta["name"])
    name = f"{owner}-{uuid.uuid4().hex[:5]}"
    labels = {**(template.get("metadata") or {}).get("labels", {}), JOB_NAME_LABEL: owner}
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels | {"job-name": owner},
        },
        "spec": template["spec"],
    }
    await api.create(PODS, body)
    return name


async def record_pod(api: Api, namespace: str, run: PodRun, pod_spec: dict) -> None:
    """What the kubelet reports of a finished pod: each container's state, and (here) its log."""
    images = {c["name"]: c.get("image", "") for c in pod_spec.get("containers") or []}
    statuses = [
        {
            "name": c.name,
            "image": images.get(c.name, ""),
            "imageID": "",
            "restartCount": 0,
            "ready": False,
            "state": {
                "terminated": {"exitCode": c.exit_code, "message": c.message}
                if c.message
                else {"exitCode": c.exit_code}
            },
        }
        for c in run.containers.values()
    ]
    phase = "Succeeded" if run.ok else "Failed"
    logs = {LOG_ANNOTATION + c.name: c.output for c in run.containers.values()}
    with contextlib.suppress(Exception):
        await api.patch(PODS, namespace, run.name, {"metadata": {"annotations": logs}})
        await api.patch(
            PODS,
            namespace,
            run.name,
            {"status": {"phase": phase, "containerStatuses": statuses}},
            sub="status",
        )
