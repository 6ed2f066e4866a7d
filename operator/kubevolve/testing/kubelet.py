"""A stand-in for the kubelet and the Job controller on top of kmock: it starts each new Job's pod, records
it as a Pod object (pod_objects.py), then patches the Job's status (Complete or Failed), which the operator
sees through its watch.

The pod runs in one of three modes: `process`, each container a local process, and `fake`, its first container
in-process with stand-in agents (both local_pods.py); `image`, the pod in its built image through a
`PodRunner` (pods/runner.py): read-only root, the pod's uids, volumes, termination messages and network
policy, as a real kubelet runs it. It is recorded the same way in every mode.
Suspended Jobs (Kueue's admission) wait until `admit()`; `fail` can make chosen Jobs fail like a crashed pod.

A container that names no working directory runs in its image's WORKDIR, which in kubevolve's images is the
task root the operator's Jobs name as their `workingDir`: the kubelet uses the last one a Job named. A
TrainJob's pods are what Trainer would make of it on its TrainingRuntime (trainer.py, which also makes the
hostfile ConfigMap and ssh key Secret, as Trainer does): its launcher pod is recorded and run as a Job's pod
is (process and fake modes), its node pods, which would run sshd, are not run.

It acts as the control plane (`CONTROL_PLANE_TOKEN`: the Job controller, Kueue and the kubelet are cluster
components, outside the chart's RBAC). A pod runs as its ServiceAccount, as on a cluster (service_accounts.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubevolve.cli.step import parse_step_command
from kubevolve.core.kinds import Role
from kubevolve.runtime.kubernetes import QUEUE_LABEL
from kubevolve.runtime.kubernetes.observe import format_time
from kubevolve.testing import (
    CONFIGMAPS,
    JOBS,
    TRAINING_RUNTIMES,
    TRAINJOBS,
    Api,
    ApiError,
)
from kubevolve.testing.fake_steps import FakeSteps, Score
from kubevolve.testing.local_pods import JobRule, LocalPods
from kubevolve.testing.pod_objects import ContainerRun, PodRun, create_pod_object, pod_spec_of, record_pod
from kubevolve.testing.pods.runner import PodResult, PodRunner
from kubevolve.testing.pods.spec import PodError
from kubevolve.testing.service_accounts import admit_service_account
from kubevolve.testing.strict import CONTROL_PLANE_TOKEN
from kubevolve.testing.trainer import LAUNCHER, TrainJobRefused, jobset_pods

FailRule = Callable[[dict[str, Any]], str | None]  # a Job -> a failure reason, or None to run it


def _finished_status(kind: str, failure: str | None, now: str) -> dict[str, Any]:
    """The status the Job controller (or Trainer, copying its JobSet's conditions) writes at the end."""
    if kind == "TrainJob":
        cond = (
            {"type": "Complete", "reason": "AllJobsCompleted", "message": "jobset completed successfully"}
            if failure is None
            else {"type": "Failed", "reason": "FailedJobs", "message": failure}
        )
        return {"conditions": [{**cond, "status": "True", "lastTransitionTime": now}]}
    if failure is None:
        cond = {"type": "Complete", "status": "True", "lastTransitionTime": now}
        return {"active": 0, "succeeded": 1, "completionTime": now, "conditions": [cond]}
    cond = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": failure,
        "lastTransitionTime": now,
    }
    return {"active": 0, "failed": 1, "conditions": [cond]}


class Kubelet:
    def __init__(
        self,
        api: Api,
        *,
        mode: str = "process",
        concurrency: int = 2,
        fail: FailRule | None = None,
        score: Score | None = None,
        kueue: bool = False,
        workdir: Path | None = None,
        identities: JobRule | None = None,
        pods: PodRunner | None = None,
    ):
        if mode == "image" and pods is None:
            raise ValueError("mode 'image' runs pods through a PodRunner: pass pods=")
        self.pods = pods
        self.pod_results: dict[str, PodResult] = {}  # image mode: each Job's pod as it ran
        self.api = api.as_token(CONTROL_PLANE_TOKEN)  # its own client: the control plane's identity
        self.mode, self.fail, self.kueue = mode, fail, kueue
        self.fake = FakeSteps(score) if mode == "fake" else None
        self.image_workdir: str | None = None  # see the module's docstring
        self.slots = asyncio.Semaphore(concurrency)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kubelet-"))
        os.chmod(self.workdir, 0o755)  # the containers' uids traverse it to their volumes
        self.seen: set[tuple] = set()  # (kind, namespace, name, uid) of the Jobs already started
        self._held: dict[tuple, dict] = {}  # queued Jobs waiting for Kueue's admission
        self.started: Counter[str] = Counter()  # Job name -> times started
        self.ran: Counter[tuple[Role, str]] = Counter()  # (role, node id) -> times its step ran
        self.admitted: set[str] = set()
        self.kueue_budget: int | None = 0  # Jobs Kueue may still admit (None: all)
        self.outputs: dict[str, str] = {}
        self.bodies: dict[str, dict] = {}  # every Job (or TrainJob) run, as it was when it started
        self.pod_runs: dict[str, PodRun] = {}  # Job name -> its (last) pod, container by container
        self.local_pods = LocalPods(self.api, self.workdir, fake=self.fake, identities=identities)
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []

    @property
    def identified(self) -> bool:
        """Whether every container it should have switched to its uid ran as that uid (local_pods.py)."""
        return self.local_pods.identified

    def start(self) -> None:
        self._loops = [asyncio.create_task(self._watch(resource)) for resource in (JOBS, TRAINJOBS)]

    async def stop(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        await self.api.close()
        if self.fake is not None:
            self.fake.close()

    def admit(self, limit: int | None = None) -> None:
        """Let Kueue admit waiting Jobs: all from now on, or `limit` more."""
        self.kueue_budget = None if limit is None or self.kueue_budget is None else self.kueue_budget + limit
        for job in self._held.values():
            self._consider(job)

    async def _watch(self, resource: str) -> None:
        """Follow the resource's watch stream, as a kubelet follows its pods'."""
        kind = "Job" if resource == JOBS else "TrainJob"
        async for event in self.api.watch(resource):
            job = event.get("object") or {}
            job.setdefault("kind", kind)
            if event.get("type") in ("ADDED", "MODIFIED"):
                self._consider(job)

    def _consider(self, job: dict) -> None:
        meta = job["metadata"]
        ident = (job["kind"], meta["namespace"], meta["name"], meta.get("uid"))
        if ident in self.seen or (job.get("status") or {}).get("conditions"):
            return
        if self.kueue and QUEUE_LABEL in meta.get("labels", {}):
            self._held[ident] = job
            task = asyncio.create_task(self._admission(ident, job))
        else:
            self.seen.add(ident)
            task = asyncio.create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admission(self, ident: tuple, job: dict) -> None:
        """Kueue: its webhook suspends a queued Job; admission unsuspends it, and then its pod starts."""
        meta, resource = job["metadata"], JOBS if job["kind"] == "Job" else TRAINJOBS
        if ident in self.seen:
            return
        budget = self.kueue_budget
        if budget is None or budget > 0:
            self.kueue_budget = None if budget is None else budget - 1
            self.seen.add(ident)
            self._held.pop(ident, None)
            await self.api.patch(resource, meta["namespace"], meta["name"], {"spec": {"suspend": False}})
            await self._run(job)
        elif not job["spec"].get("suspend"):
            await self.api.patch(resource, meta["namespace"], meta["name"], {"spec": {"suspend": True}})

    async def _run(self, job: dict) -> None:
        meta = job["metadata"]
        resource = JOBS if job["kind"] == "Job" else TRAINJOBS
        async with self.slots:
            self.started[meta["name"]] += 1
            self.bodies[meta["name"]] = job
            if job["kind"] == "Job":
                await self._patch(resource, meta, {"startTime": format_time(time.time()), "active": 1})
            reason = self.fail(job) if self.fail else None
            if reason is None:
                reason = await admit_service_account(self.api, job)
            if reason is None:
                reason = await self._execute(job)
            status = _finished_status(job["kind"], reason, format_time(time.time()))
            await self._patch(resource, meta, status)

    async def _patch(self, resource: str, meta: dict, status: dict) -> None:
        with contextlib.suppress(Exception):  # the Job was deleted meanwhile (e.g. with its run)
            await self.api.patch(resource, meta["namespace"], meta["name"], {"status": status}, sub="status")

    async def _execute(self, job: dict) -> str | None:
        """Run the Job's pod (a TrainJob's trainer); None if it succeeded, else why it failed."""
        meta = job["metadata"]
        if job["kind"] == "TrainJob":
            if self.mode == "image":
                return "a TrainJob's pods run in process or fake mode only"
            refused = await self._launcher(job)
            if refused is not None:
                return refused
        containers = pod_spec_of(job)["containers"]
        argv = list(containers[0]["command"]) + list(containers[0].get("args") or [])
        command = parse_step_command(argv)
        self.ran[(command.role, command.node_id or "")] += 1
        self.image_workdir = containers[0].get("workingDir") or self.image_workdir
        if self.mode == "image":
            pod = await self._in_image(job)
        else:
            pod = await self._pod(job)
        self.pod_runs[meta["name"]] = pod
        first = next(iter(pod.containers.values()))
        self.outputs[meta["name"]] = first.output
        failed = [c for c in pod.containers.values() if c.exit_code != 0]
        if not failed:
            return None
        lines = failed[0].output.strip().splitlines()
        return f"container {failed[0].name}: exit status {failed[0].exit_code}: {lines[-1:] or ''}"

    # ---- a Job's pod ---------------------------------------------------------------------------------
    async def _launcher(self, job: dict) -> str | None:
        """What Trainer makes of a TrainJob: its MPI objects, and its launcher pod's template, kept on the
        body (`_launcher`) for the pod to run from; why it cannot run, else None."""
        meta, ref = job["metadata"], job["spec"]["runtimeRef"]
        if ref.get("kind") != "TrainingRuntime":
            return f"{ref.get('kind')} {ref['name']}: only namespaced TrainingRuntimes are emulated here"
        runtime = await self.api.get(TRAINING_RUNTIMES, meta["namespace"], ref["name"])
        if runtime is None:
            return f"TrainingRuntime {ref['name']} not found"
        try:
            made = jobset_pods(job, runtime)
        except TrainJobRefused as err:
            return f"refused by Trainer's webhook: {err}"
        for obj in made.objects:
            resource = CONFIGMAPS if obj["kind"] == "ConfigMap" else "v1/secrets"
            with contextlib.suppress(ApiError):  # made once per TrainJob, as Trainer does
                await self.api.create(resource, obj)
        job["_launcher"] = made.pods[LAUNCHER][1]
        return None

    async def _pod(self, job: dict) -> PodRun:
        """Create the Pod object, run its containers (local_pods.py), record how each ended and its log."""
        run = PodRun(await create_pod_object(self.api, job))
        run.containers = await self.local_pods.run(job, self.image_workdir)
        await record_pod(self.api, job["metadata"]["namespace"], run, pod_spec_of(job))
        return run

    async def _in_image(self, job: dict) -> PodRun:
        """Image mode: the Job's pod run by the PodRunner, recorded as `_pod` records it."""
        assert self.pods is not None
        meta, template = job["metadata"], job["spec"]["template"]
        labels = (template.get("metadata") or {}).get("labels") or {}
        run = PodRun(await create_pod_object(self.api, job))
        try:
            result = await self.pods.run(meta["namespace"], meta["name"], labels, template["spec"])
        except PodError as err:
            names = [c["name"] for c in template["spec"]["containers"]]
            run.containers = {n: ContainerRun(n, 1, f"{err.reason}: {err}") for n in names}
        else:
            self.pod_results[meta["name"]] = result
            run.containers = {
                c.name: ContainerRun(c.name, c.exit_code, c.output, message=c.message, uid=c.uid)
                for c in result.containers
            }
        await record_pod(self.api, meta["namespace"], run, template["spec"])
        return run
