"""A stand-in for the kubelet and the Job controller on top of kmock: it starts each new Job's pod, records
it as a Pod object (with the Job controller's `batch.kubernetes.io/job-name` label, each container's exit
code and termination message, and its log, which the emulator serves at `pods/NAME/log`), then patches the
Job's status (Complete or Failed), which the operator sees through its watch.

In `process` mode every container of a Job's pod runs as a local process, side by side, exactly as written
in the Job (`kubevolve step ...`, `python -m ...`, with the container's env and working directory): the pod's
emptyDir volumes become folders (world-writable, as a kubelet makes them) shared by the containers that
mount them, a ConfigMap volume a folder of its keys, a container's terminationMessagePath a file of its own,
Secret references in env are read when the container starts. With `identities` (a rule: which Jobs) and as
root, each container of those Jobs' pods runs as the uid and gid its securityContext names (the pod's
fsGroup as a supplementary group), with no new privileges, in a pid and mount namespace of its own (its
command is pid 1 and sees only its own processes), provided this machine's interpreter can be run by that
uid (`identified`: whether every one could); a volume only one container mounts, and each container's
termination-log file, then belong to that container's uid alone (a kubelet mounts them in no other).
Evaluation pods, which touch no store, are the ones to pick: the others share the test's store file with the
operator. So the end-to-end tests run the real step code, the real judge and zygote split across two
"containers" of different uids, and the real result path. In `image` mode the Job's pod runs in its built
image through a `PodRunner` (pods/runner.py): read-only root, the pod's uids, volumes, termination messages and
network policy, as a real kubelet runs it; it is recorded as in `process` mode.
In `fake` mode a Job's first container runs in-process instead (fake_steps.py: the real steps with stand-in
agents and a stand-in evaluation), and its result is published the same way.
Suspended Jobs (Kueue's admission) wait until `admit()`; `fail` can make chosen Jobs fail like a crashed pod.

A container that names no working directory runs in its image's WORKDIR, which in kubevolve's images is the
task root the operator's Jobs name as their `workingDir`: the kubelet uses the last one a Job named. A
TrainJob's pods are what Trainer would make of it on its TrainingRuntime (trainer.py, which also makes the
hostfile ConfigMap and ssh key Secret, as Trainer does): its launcher pod is recorded and run as a Job's pod
is (process and fake modes), its node pods, which would run sshd, are not run.

It acts as the control plane (`CONTROL_PLANE_TOKEN`: the Job controller, Kueue and the kubelet are cluster
components, outside the chart's RBAC). A pod runs as its ServiceAccount, as on a cluster: a pod that names one
that does not exist is never created (the Job fails with the ServiceAccount admission's message), and the pod's
processes get a kubeconfig for the API server with that ServiceAccount's token (the TokenRequest API) only when
the pod mounts a token; otherwise they can reach the API server only anonymously.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import json
import os
import signal
import site
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubevolve.cli.step import parse_step_command
from kubevolve.core.kinds import Role
from kubevolve.runtime.kubernetes import QUEUE_LABEL
from kubevolve.runtime.kubernetes.observe import format_time
from kubevolve.testing import (
    CONFIGMAPS,
    JOBS,
    LOG_ANNOTATION,
    PODS,
    TRAINING_RUNTIMES,
    TRAINJOBS,
    Api,
    ApiError,
)
from kubevolve.testing.fake_steps import FakeSteps, Score
from kubevolve.testing.pods.runner import PodResult, PodRunner
from kubevolve.testing.pods.spec import PodError
from kubevolve.testing.strict import CONTROL_PLANE_TOKEN
from kubevolve.testing.trainer import LAUNCHER, TrainJobRefused, jobset_pods

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds the kubevolve package
TERMINATION_LIMIT = 4096  # a kubelet keeps at most this much of a termination message
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

FailRule = Callable[[dict[str, Any]], str | None]  # a Job -> a failure reason, or None to run it
JobRule = Callable[[dict[str, Any]], bool]
# the judge starts its own interpreter again (sys.executable): a uid must be able to run that one too
NESTED_PYTHON_CHECK = (
    "import kubevolve, subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True)"
)


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


@functools.cache
def _python_for(uid: int, gid: int) -> tuple[str, str] | None:
    """(interpreter, PYTHONPATH) with which `uid` can import kubevolve and start the same interpreter again:
    this interpreter, else the system's of the same version with our site-packages (a Python under /root
    cannot be run by another uid); None if neither works."""
    here = os.pathsep.join([PACKAGE_ROOT, *site.getsitepackages()])
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    for python, path in ((sys.executable, PACKAGE_ROOT), (system, here)):
        argv = [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            python,
            "-c",
            NESTED_PYTHON_CHECK,
        ]
        try:
            done = subprocess.run(argv, env={"PYTHONPATH": path}, cwd="/", capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return python, path
    return None


def _pod_spec_of(job: dict) -> dict:
    """The pod spec a Job's pods get (a TrainJob's launcher's: `_launcher` puts it on the TrainJob's body)."""
    if job["kind"] == "TrainJob":
        return (job.get("_launcher") or {}).get("spec") or {}
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
        self.identities = identities if os.geteuid() == 0 else None  # see the module's docstring
        self.identified = self.identities is not None  # every container it should switch, it could
        self._pod_ids = itertools.count()
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
                reason = await self._execute(job)
            status = _finished_status(job["kind"], reason, format_time(time.time()))
            await self._patch(resource, meta, status)

    async def _admit_pod(self, job: dict) -> str | None:
        """The ServiceAccount admission: a pod whose ServiceAccount does not exist is refused."""
        account = _pod_spec_of(job).get("serviceAccountName")
        if not account or account == "default":
            return None
        namespace = job["metadata"]["namespace"]
        if await self.api.get("v1/serviceaccounts", namespace, account) is None:
            return f"FailedCreate: error looking up service account {namespace}/{account}: not found"
        return None

    async def _credentials(self, job: dict, folder: Path) -> dict[str, str]:
        """The pod's view of the API server: a kubeconfig, with its ServiceAccount's token if it mounts one."""
        pod, namespace = _pod_spec_of(job), job["metadata"]["namespace"]
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

    async def _execute(self, job: dict) -> str | None:
        """Run the Job's pod (a TrainJob's trainer); None if it succeeded, else why it failed."""
        meta = job["metadata"]
        if job["kind"] == "TrainJob":
            if self.mode == "image":
                return "a TrainJob's pods run in process or fake mode only"
            refused = await self._launcher(job)
            if refused is not None:
                return refused
        containers = _pod_spec_of(job)["containers"]
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

    async def _pod_object(self, job: dict) -> str:
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
        await self.api.create(PODS, body)
        return name

    async def _pod(self, job: dict) -> PodRun:
        """Create the Pod object, run its containers side by side, record how each ended and its log."""
        namespace, pod_spec = job["metadata"]["namespace"], _pod_spec_of(job)
        run = PodRun(await self._pod_object(job))
        root = self.workdir / f"p{next(self._pod_ids)}"  # short: a Unix socket's path has 107 bytes
        try:
            volumes = await self._volumes(namespace, pod_spec, root)
        except LookupError as err:  # as the kubelet's CreateContainerConfigError
            run.containers = {c["name"]: ContainerRun(c["name"], 1, str(err)) for c in pod_spec["containers"]}
        else:
            containers = pod_spec["containers"] if self.fake is None else pod_spec["containers"][:1]
            switch = self.identities is not None and self.identities(job)
            if switch:
                self._private_volumes(pod_spec, volumes)
            credentials = await self._credentials(job, root / ".pod")
            ran = await asyncio.gather(
                *(
                    self._container(namespace, c, pod_spec if switch else None, volumes, root, credentials)
                    for c in containers
                )
            )
            run.containers = {c.name: c for c in ran}
        await self._record(namespace, run, pod_spec)
        return run

    async def _volumes(self, namespace: str, pod_spec: dict, root: Path) -> dict[str, Path]:
        """Each of the pod's volumes as a local folder: emptyDirs world-writable, ConfigMaps their keys."""
        out: dict[str, Path] = {}
        root.mkdir(mode=0o755)
        for volume in pod_spec.get("volumes") or []:
            path = out[volume["name"]] = root / volume["name"]
            path.mkdir()
            os.chmod(path, 0o777 if "emptyDir" in volume else 0o755)
            if "configMap" in volume:
                ref = volume["configMap"]["name"]
                config = await self.api.get(CONFIGMAPS, namespace, ref)
                if config is None:
                    raise LookupError(f"CreateContainerConfigError: configmap {ref!r} not found")
                _write_items(path, config.get("data") or {}, volume["configMap"].get("items"))
            if "secret" in volume:  # a TrainJob's ssh key (Trainer's MPI plugin)
                ref = volume["secret"]["secretName"]
                secret = await self.api.get("v1/secrets", namespace, ref)
                if secret is None:
                    raise LookupError(f"CreateContainerConfigError: secret {ref!r} not found")
                data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
                _write_items(path, data, volume["secret"].get("items"))
        return out

    def _private_volumes(self, pod_spec: dict, volumes: dict[str, Path]) -> None:
        """Containers switched to their uids: a volume only one container mounts becomes that container's
        alone (a kubelet mounts it in no other), a shared one stays world-writable."""
        users: dict[str, list[dict]] = {}
        for container in pod_spec["containers"]:
            for mount in container.get("volumeMounts", []):
                users.setdefault(mount["name"], []).append(container)
        for name, path in volumes.items():
            identity = self._identity(users[name][0], pod_spec) if len(users.get(name, [])) == 1 else None
            if identity is not None:
                for entry in [path, *path.rglob("*")]:
                    os.chown(entry, identity[0], identity[1])
                os.chmod(path, 0o700)

    async def _container(
        self,
        namespace: str,
        container: dict,
        pod_spec: dict | None,
        volumes: dict[str, Path],
        root: Path,
        credentials: dict[str, str],
    ) -> ContainerRun:
        """`pod_spec`: when the container is to run as the uid it names; `credentials`: the pod's kubeconfig."""
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        termination = root / f"{container['name']}.termination-log"
        termination.touch()
        os.chmod(termination, 0o666)
        identity = self._identity(container, pod_spec)
        if identity is not None:  # its own file: another container's uid cannot write it (nor reach it there)
            os.chown(termination, identity[0], identity[1])
            os.chmod(termination, 0o644)
        mounts[container.get("terminationMessagePath") or "/dev/termination-log"] = termination
        if self.fake is not None:
            ran = await self._fake(container, mounts)
        else:
            ran = await self._process(namespace, container, mounts, root, pod_spec, credentials)
        ran.message = termination.read_bytes()[:TERMINATION_LIMIT].decode(errors="replace")
        return ran

    async def _fake(self, container: dict, mounts: dict[str, Path]) -> ContainerRun:
        assert self.fake is not None
        argv = [_local(a, mounts) for a in list(container["command"]) + list(container.get("args") or [])]
        workdir = container.get("workingDir") or self.image_workdir
        try:
            output = await asyncio.to_thread(self.fake.run, argv, Path(workdir) if workdir else None)
            return ContainerRun(container["name"], 0, output)
        except Exception as err:
            return ContainerRun(container["name"], 1, f"{type(err).__name__}: {err}")

    async def _in_image(self, job: dict) -> PodRun:
        """Image mode: the Job's pod run by the PodRunner, recorded as `_pod` records it."""
        assert self.pods is not None
        meta, template = job["metadata"], job["spec"]["template"]
        labels = (template.get("metadata") or {}).get("labels") or {}
        run = PodRun(await self._pod_object(job))
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
        await self._record(meta["namespace"], run, template["spec"])
        return run

    async def _record(self, namespace: str, run: PodRun, pod_spec: dict) -> None:
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
            await self.api.patch(PODS, namespace, run.name, {"metadata": {"annotations": logs}})
            await self.api.patch(
                PODS,
                namespace,
                run.name,
                {"status": {"phase": phase, "containerStatuses": statuses}},
                sub="status",
            )

    # ---- one container as a process ----------------------------------------------------------------
    async def _process(
        self,
        namespace: str,
        container: dict,
        mounts: dict[str, Path],
        root: Path,
        pod_spec: dict | None,
        credentials: dict[str, str],
    ) -> ContainerRun:
        name = container.get("name", "trainer")
        # PYTHONPATH stands in for the image's installed package: the pod runs the kubevolve under test
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": PACKAGE_ROOT, **credentials}
        env.update({e["name"]: _local(e["value"], mounts) for e in container.get("env", []) if "value" in e})
        for entry in container.get("env", []):  # as a kubelet does: read the Secret when the pod starts
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref is not None:
                secret = await self.api.get("v1/secrets", namespace, ref["name"])
                value = ((secret or {}).get("data") or {}).get(ref["key"])
                if value is None:
                    message = f"CreateContainerConfigError: secret {ref['name']!r} has no key {ref['key']!r}"
                    return ContainerRun(name, 1, message)
                env[entry["name"]] = base64.b64decode(value).decode()
        python = sys.executable
        argv = [_local(a, mounts) for a in list(container["command"]) + list(container.get("args") or [])]
        identity = self._identity(container, pod_spec)
        if identity is not None:
            found = _python_for(identity[0], identity[1])
            if found is None:
                self.identified = False
                identity = None
            else:
                python, env["PYTHONPATH"] = found
        if argv[0] == "kubevolve":
            argv = [python, "-m", "kubevolve", *argv[1:]]
        elif argv[0] == "python":
            argv = [python, *argv[1:]]
        if identity is not None:
            uid, gid, groups = identity
            argv = [
                *("unshare", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc"),
                *(
                    "setpriv",
                    f"--reuid={uid}",
                    f"--regid={gid}",
                    f"--groups={','.join(map(str, groups)) or gid}",
                ),
                *("--no-new-privs", "--"),
                *argv,
            ]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=container.get("workingDir") or self.image_workdir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a group of its own: killed whole, the uid-switched command included
        )
        try:
            out, _ = await proc.communicate()
        except asyncio.CancelledError:  # the kubelet stops: so does the "pod", before the event loop closes
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its pid 1 too, whose namespace then dies with it
            await proc.wait()
            raise
        code = proc.returncode if proc.returncode is not None else 1
        return ContainerRun(
            name,
            code if code >= 0 else 128 - code,
            out.decode(errors="replace"),
            pid=proc.pid,
            uid=None if identity is None else identity[0],
        )

    def _identity(self, container: dict, pod_spec: dict | None) -> tuple[int, int, list[int]] | None:
        """(uid, gid, groups) the container runs as, when it is to switch (root, a uid it names)."""
        if pod_spec is None:
            return None
        pod_context, own = pod_spec.get("securityContext") or {}, container.get("securityContext") or {}
        uid = own.get("runAsUser", pod_context.get("runAsUser"))
        if uid is None:
            return None
        gid = own.get("runAsGroup", pod_context.get("runAsGroup", uid))
        groups = [pod_context["fsGroup"]] if "fsGroup" in pod_context else []
        return int(uid), int(gid), groups


def _write_items(folder: Path, data: dict[str, str], items: list[dict] | None) -> None:
    """A ConfigMap's or Secret's keys as files of a volume: all of them, or the `items` it names."""
    for item in items if items is not None else [{"key": k, "path": k} for k in data]:
        target = folder / item["path"]
        target.write_text(data[item["key"]])
        os.chmod(target, 0o644)


def _local(value: str, mounts: dict[str, Path]) -> str:
    """A path inside the "pod" as the local folder that stands for its volume (or file); others as given."""
    for mount, path in mounts.items():
        if value == mount or value.startswith(mount + "/"):
            return str(path) + value[len(mount) :]
    return value
