"""A stand-in for the kubelet and the Job controller on top of kmock: it starts each new Job's container,
then patches the Job's status (Complete or Failed), which the operator sees through its watch.

In `process` mode a Job's command runs as a local process exactly as written in the Job (`kubevolve step
...`, with the pod's env and working directory; emptyDir mounts become temp folders), so the end-to-end
test exercises the real step code and the real store writes. In `image` mode the Job's pod runs in its built
image through a `PodRunner` (pods.py): read-only root, the pod's uid, volumes and network policy, as a real
kubelet runs it. In `fake` mode the command runs in-process (fake_steps.py: the real steps with stand-in
agents and a stand-in evaluation).
Suspended Jobs (Kueue's admission) wait until `admit()`; `fail` can make chosen Jobs fail like a crashed pod.

A container that names no working directory (a TrainJob's trainer) runs in its image's WORKDIR, which in
kubevolve's images is the task root the operator's Jobs name as their `workingDir`: the kubelet uses the last
one a Job named.

It acts as the control plane (`CONTROL_PLANE_TOKEN`: the Job controller, Kueue and the kubelet are cluster
components, outside the chart's RBAC). A pod runs as its ServiceAccount, as on a cluster: a pod that names one
that does not exist is never created (the Job fails with the ServiceAccount admission's message), and the pod's
process gets a kubeconfig for the API server with that ServiceAccount's token (the TokenRequest API) only when
the pod mounts a token; otherwise it can reach the API server only anonymously.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
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
from kubevolve.testing import JOBS, TRAINJOBS, Api, ApiError
from kubevolve.testing.fake_steps import FakeSteps, Score
from kubevolve.testing.pods import PodError, PodResult, PodRunner
from kubevolve.testing.strict import CONTROL_PLANE_TOKEN

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds the kubevolve package

FailRule = Callable[[dict[str, Any]], str | None]  # a Job -> a failure reason, or None to run it


def _container(job: dict) -> dict:
    if job["kind"] == "TrainJob":
        return job["spec"]["trainer"]
    return job["spec"]["template"]["spec"]["containers"][0]


def _pod(job: dict) -> dict:
    """The pod spec a Job's pods get (a TrainJob's come from its runtime: the defaults here)."""
    if job["kind"] == "TrainJob":
        return {}
    return job["spec"]["template"]["spec"]


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
        self.seen: set[tuple] = set()  # (kind, namespace, name, uid) of the Jobs already started
        self._held: dict[tuple, dict] = {}  # queued Jobs waiting for Kueue's admission
        self.started: Counter[str] = Counter()  # Job name -> times started
        self.ran: Counter[tuple[Role, str]] = Counter()  # (role, node id) -> times its step ran
        self.admitted: set[str] = set()
        self.kueue_budget: int | None = 0  # Jobs Kueue may still admit (None: all)
        self.outputs: dict[str, str] = {}
        self.bodies: dict[str, dict] = {}  # every Job (or TrainJob) run, as it was when it started
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []

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
                reason = await self._admit_pod(job)
            if reason is None:
                ok, output = await self._execute(job)
                self.outputs[meta["name"]] = output
                reason = None if ok else f"exit status 1: {output.strip().splitlines()[-1:] or ''}"
            status = _finished_status(job["kind"], reason, format_time(time.time()))
            await self._patch(resource, meta, status)

    async def _admit_pod(self, job: dict) -> str | None:
        """The ServiceAccount admission: a pod whose ServiceAccount does not exist is refused."""
        account = _pod(job).get("serviceAccountName")
        if not account or account == "default":
            return None
        namespace = job["metadata"]["namespace"]
        if await self.api.get("v1/serviceaccounts", namespace, account) is None:
            return f"FailedCreate: error looking up service account {namespace}/{account}: not found"
        return None

    async def _credentials(self, job: dict, folder: Path) -> dict[str, str]:
        """The pod's view of the API server: a kubeconfig, with its ServiceAccount's token if it mounts one."""
        pod, namespace = _pod(job), job["metadata"]["namespace"]
        account = pod.get("serviceAccountName") or "default"
        mounts = pod.get("automountServiceAccountToken")
        if mounts is None:  # the ServiceAccount decides
            sa = (
                await self.api.get("v1/serviceaccounts", namespace, account) if account != "default" else None
            )
            mounts = (sa or {}).get("automountServiceAccountToken", True)
        user: dict[str, str] = {}
        if mounts:
            path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
            async with self.api.session.post(self.api.url + path, json={"spec": {}}) as resp:
                if resp.status >= 400:
                    raise ApiError(resp.status, f"no token for {namespace}/{account}")
                user = {"token": (await resp.json())["status"]["token"]}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.api.url}}],
            "users": [{"name": "pod", "user": user}],
            "contexts": [
                {"name": "pod", "context": {"cluster": "kmock", "user": "pod", "namespace": namespace}}
            ],
            "current-context": "pod",
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "kubeconfig").write_text(json.dumps(config))
        return {"KUBECONFIG": str(folder / "kubeconfig")}

    async def _patch(self, resource: str, meta: dict, status: dict) -> None:
        with contextlib.suppress(Exception):  # the Job was deleted meanwhile (e.g. with its run)
            await self.api.patch(resource, meta["namespace"], meta["name"], {"status": status}, sub="status")

    async def _execute(self, job: dict) -> tuple[bool, str]:
        container = _container(job)
        argv = list(container["command"]) + list(container.get("args") or [])
        command = parse_step_command(argv)
        self.ran[(command.role, command.node_id or "")] += 1
        workdir = self.image_workdir = container.get("workingDir") or self.image_workdir
        if self.fake is not None:
            try:
                await asyncio.to_thread(self.fake.run, argv, Path(workdir) if workdir else None)
                return True, ""
            except Exception as err:
                return False, f"{type(err).__name__}: {err}"
        if self.mode == "image":
            return await self._in_image(job)
        return await self._process(job, container, argv)

    async def _in_image(self, job: dict) -> tuple[bool, str]:
        assert self.pods is not None
        if job["kind"] == "TrainJob":
            return (
                False,
                "a TrainJob's pods come from its training runtime's template, which this kubelet lacks",
            )
        meta, template = job["metadata"], job["spec"]["template"]
        labels = (template.get("metadata") or {}).get("labels") or {}
        try:
            result = await self.pods.run(meta["namespace"], meta["name"], labels, template["spec"])
        except PodError as err:
            return False, f"{err.reason}: {err}"
        self.pod_results[meta["name"]] = result
        return result.exit_code == 0, result.output

    async def _process(self, job: dict, container: dict, argv: list[str]) -> tuple[bool, str]:
        root = self.workdir / job["metadata"]["name"]
        mounts = {m["mountPath"]: root / m["name"] for m in container.get("volumeMounts", [])}
        for path in mounts.values():
            path.mkdir(parents=True, exist_ok=True)

        def local(value: str) -> str:
            for mount, path in mounts.items():
                if value == mount or value.startswith(mount + "/"):
                    return str(path) + value[len(mount) :]
            return value

        # PYTHONPATH stands in for the image's installed package: the pod runs the kubevolve under test
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": PACKAGE_ROOT}
        env.update(await self._credentials(job, root / ".pod"))
        env.update({e["name"]: local(e["value"]) for e in container.get("env", []) if "value" in e})
        for entry in container.get("env", []):  # as a kubelet does: read the Secret when the pod starts
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref is not None:
                secret = await self.api.get("v1/secrets", job["metadata"]["namespace"], ref["name"])
                value = ((secret or {}).get("data") or {}).get(ref["key"])
                if value is None:
                    return (
                        False,
                        f"CreateContainerConfigError: secret {ref['name']!r} has no key {ref['key']!r}",
                    )
                env[entry["name"]] = base64.b64decode(value).decode()
        argv = [local(a) for a in argv]  # paths inside the "pod" map to its folders, the interpreter does not
        if argv[0] == "kubevolve":
            argv = [sys.executable, "-m", "kubevolve", *argv[1:]]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=container.get("workingDir") or self.image_workdir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await proc.communicate()
        except asyncio.CancelledError:  # the kubelet stops: so does the "pod", before the event loop closes
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        return proc.returncode == 0, out.decode(errors="replace")
