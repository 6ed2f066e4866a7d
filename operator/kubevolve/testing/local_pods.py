"""A Job's pod run on this machine by the kmock kubelet (kubelet.py), in its `process` and `fake` modes.

In `process` mode every container of the pod runs as a local process, side by side, exactly as written in the
Job (`kubevolve step ...`, `python -m ...`, with the container's env and working directory): the pod's
emptyDir volumes become folders (world-writable, as a kubelet makes them) shared by the containers that mount
them, a ConfigMap volume a folder of its keys, a container's terminationMessagePath a file of its own, Secret
references in env are read when the container starts. With `identities` (a rule: which Jobs) and as root,
each container of those Jobs' pods runs as the uid and gid its securityContext names (the pod's fsGroup as a
supplementary group), with no new privileges, in a pid and mount namespace of its own (its command is pid 1
and sees only its own processes), provided this machine's interpreter can be run by that uid (`identified`:
whether every one could); a volume only one container mounts, and each container's termination-log file,
then belong to that container's uid alone (a kubelet mounts them in no other). Evaluation pods, which touch no
store, are the ones to pick: the others share the test's store file with the operator. So the end-to-end
tests run the real step code, the real judge and zygote split across two "containers" of different uids, and
the real result path.
In `fake` mode the pod's first container runs in-process instead (fake_steps.py: the real steps with stand-in
agents and a stand-in evaluation).

A container that names no working directory runs in the image's WORKDIR the kubelet passes (`image_workdir`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import os
import signal
import site
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubevolve.loop.evaluation_io import TERMINATION_LIMIT
from kubevolve.testing import CONFIGMAPS, Api
from kubevolve.testing.fake_steps import FakeSteps
from kubevolve.testing.pod_objects import ContainerRun, pod_spec_of
from kubevolve.testing.service_accounts import pod_credentials

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds the kubevolve package
JobRule = Callable[[dict[str, Any]], bool]
# the judge starts its own interpreter again (sys.executable): a uid must be able to run that one too
NESTED_PYTHON_CHECK = (
    "import kubevolve, subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True)"
)


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


class LocalPods:
    """Runs Jobs' pods as local processes (or in-process, with `fake`), under `workdir`, each container
    switched to its uid in the Jobs `identities` picks (as root only)."""

    def __init__(self, api: Api, workdir: Path, *, fake: FakeSteps | None, identities: JobRule | None):
        self.api, self.workdir, self.fake = api, workdir, fake
        self.identities = identities if os.geteuid() == 0 else None  # see the module's docstring
        self.identified = self.identities is not None  # every container it should switch, it could
        self._pod_ids = itertools.count()

    async def run(self, job: dict, image_workdir: str | None) -> dict[str, ContainerRun]:
        """Run the Job's pod's containers side by side: how each ended."""
        namespace, pod_spec = job["metadata"]["namespace"], pod_spec_of(job)
        root = self.workdir / f"p{next(self._pod_ids)}"  # short: a Unix socket's path has 107 bytes
        try:
            volumes = await self._volumes(namespace, pod_spec, root)
        except LookupError as err:  # as the kubelet's CreateContainerConfigError
            return {c["name"]: ContainerRun(c["name"], 1, str(err)) for c in pod_spec["containers"]}
        containers = pod_spec["containers"] if self.fake is None else pod_spec["containers"][:1]
        switch = self.identities is not None and self.identities(job)
        if switch:
            self._private_volumes(pod_spec, volumes)
        credentials = await pod_credentials(self.api, job, root / ".pod")
        ran = await asyncio.gather(
            *(
                self._container(
                    namespace, c, pod_spec if switch else None, volumes, root, credentials, image_workdir
                )
                for c in containers
            )
        )
        return {c.name: c for c in ran}

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
        image_workdir: str | None,
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
            ran = await self._fake(container, mounts, image_workdir)
        else:
            ran = await self._process(
                namespace, container, mounts, root, pod_spec, credentials, image_workdir
            )
        ran.message = termination.read_bytes()[:TERMINATION_LIMIT].decode(errors="replace")
        return ran

    async def _fake(
        self, container: dict, mounts: dict[str, Path], image_workdir: str | None
    ) -> ContainerRun:
        assert self.fake is not None
        argv = [_local(a, mounts) for a in list(container["command"]) + list(container.get("args") or [])]
        workdir = container.get("workingDir") or image_workdir
        try:
            output = await asyncio.to_thread(self.fake.run, argv, Path(workdir) if workdir else None)
            return ContainerRun(container["name"], 0, output)
        except Exception as err:
            return ContainerRun(container["name"], 1, f"{type(err).__name__}: {err}")

    async def _process(
        self,
        namespace: str,
        container: dict,
        mounts: dict[str, Path],
        root: Path,
        pod_spec: dict | None,
        credentials: dict[str, str],
        image_workdir: str | None,
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
            cwd=container.get("workingDir") or image_workdir,
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
