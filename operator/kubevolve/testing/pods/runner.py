"""Run a pod in a locally built image, as a kubelet would, with no container daemon: buildah mounts each
container's image, bubblewrap runs the container in it.

What a pod gets, from its spec: its init containers one after another, then its containers side by side, each
in its own image's root filesystem, read-only; each container's command and args (over the image's
entrypoint and cmd) and env (over the image's, Secret references read when it starts); the uid, gid and
groups of its securityContext, as a real uid on the host (a file the image leaves unreadable stays
unreadable), so two containers of one pod can run as two uids; the pod's volumes, made once and shared by the
containers that mount them: emptyDirs as fresh folders (mode 0777, as the kubelet makes them; a tmpfs for
medium Memory), Secrets and ConfigMaps as files; each container's termination message (a file of its own at
its terminationMessagePath, read back into `ContainerResult.message`, at most 4096 bytes); the pod's network,
ipc and uts namespaces, shared by its containers (hostname the pod's name, one 64 MiB /dev/shm), and a pid and mount namespace of each container's own; no
capabilities, no new privileges, no user namespaces inside. Network: none at all (only the pod's loopback)
when a NetworkPolicy restricts the pod's egress, the host's otherwise.

Not emulated: resource limits (no cgroups), seccomp beyond refusing user namespaces, the peers a NetworkPolicy
allows (a restricted pod reaches none of them; the tests' SQLite store is a file bound in with
`host_mounts`), image pulls (the image must be built here), writable root filesystems, sidecar init
containers and shareProcessNamespace (all refused).
Needs root (buildah mount, nsenter, setpriv), buildah, bubblewrap and unprivileged user namespaces: see
`unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubevolve.loop.evaluation_io import TERMINATION_LIMIT
from kubevolve.testing import Api, ApiError
from kubevolve.testing.netpol import NETWORK_POLICIES, egress_restricted
from kubevolve.testing.pods.images import ImageMounts
from kubevolve.testing.pods.sandbox import PodSandbox
from kubevolve.testing.pods.secrets import container_env
from kubevolve.testing.pods.spec import PodError, command_line, identity
from kubevolve.testing.pods.volumes import make_volumes, mount_args, mount_tmpfs

# bwrap, per container: a user namespace (which the container may not nest: RuntimeDefault's seccomp refuses
# that as well), its own pid and mount namespaces, the command as pid 1 as in a container (the evaluation
# worker's sweep of its pid namespace spares pid 1: the step). Network, ipc and uts are the pod's (PodSandbox).
NAMESPACES = ["--unshare-user", "--unshare-pid", "--unshare-cgroup-try", "--disable-userns", "--as-pid-1"]
NAMESPACES += ["--die-with-parent", "--new-session"]
SHM_BYTES = 64 << 20  # a container runtime's default /dev/shm
TOOLS = ("buildah", "bwrap", "setpriv", "nsenter", "mount", "umount")


def unavailable() -> str | None:
    """Why images cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "running pods in images needs root (buildah mount, setpriv)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"running pods in images needs {', '.join(missing)} (apt-get install buildah bubblewrap)"
    probe = ["setpriv", "--reuid=65532", "--regid=65532", "--clear-groups", "bwrap", "--unshare-all"]
    probe += ["--ro-bind", "/", "/", "true"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        return "bubblewrap cannot create a user namespace as an unprivileged user here"
    return None


@dataclass(frozen=True)
class ContainerResult:
    name: str
    exit_code: int
    output: str  # stdout and stderr, interleaved
    uid: int  # the uid it ran as
    message: str = ""  # its termination message, as the kubelet reports it


@dataclass(frozen=True)
class PodResult:
    containers: tuple[
        ContainerResult, ...
    ]  # the init containers that ran, then the containers, in spec order
    network: bool  # whether the pod had the host's network (no NetworkPolicy restricted its egress)

    @property
    def exit_code(self) -> int:
        """0 when every container that ran exited 0 (the pod Succeeded), else the first non-zero status."""
        return next((c.exit_code for c in self.containers if c.exit_code), 0)

    @property
    def output(self) -> str:
        """The one container's output; with several, each under a line naming the container and its status."""
        if len(self.containers) == 1:
            return self.containers[0].output
        return "".join(f"== {c.name} (exit {c.exit_code})\n{c.output}" for c in self.containers)

    def container(self, name: str) -> ContainerResult:
        return next(c for c in self.containers if c.name == name)


class PodRunner:
    """Runs pods in local images. `api` (the emulated API server) serves Secrets and NetworkPolicies;
    `host_mounts` (host folder -> path in the pod) are bound read-write into every container: the tests'
    stand-in for a service the pods would reach over the network, such as the store."""

    def __init__(
        self,
        api: Api | None = None,
        *,
        workdir: Path | None = None,
        host_mounts: dict[str, str] | None = None,
    ):
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        self.api = api
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kubevolve-pods-"))
        self.workdir.chmod(0o755)  # the pods' uids must reach their volumes and the images below it
        self.host_mounts = dict(host_mounts or {})
        self.images = ImageMounts(self.workdir)

    async def close(self) -> None:
        await asyncio.to_thread(self.images.close)
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def run(self, namespace: str, name: str, labels: dict[str, str], pod: dict[str, Any]) -> PodResult:
        """Run the pod to completion: its init containers in order (the first that fails ends the pod), then
        its containers together. A PodError means a container could not start; none ran then."""
        init, containers = list(pod.get("initContainers") or []), list(pod.get("containers") or [])
        if not containers:
            raise PodError("CreateContainerConfigError", "the pod has no containers")
        names = [c.get("name") for c in init + containers]
        if len(set(names)) != len(names) or not all(names):
            raise PodError("CreateContainerConfigError", f"container names must be set and unique: {names}")
        if any(c.get("restartPolicy") for c in init):
            raise PodError("CreateContainerConfigError", "sidecar init containers are not run by this runner")
        if pod.get("shareProcessNamespace") or pod.get("hostNetwork") or pod.get("hostPID"):
            raise PodError(
                "CreateContainerConfigError", "shared or host pid and host network are not run by this runner"
            )
        try:
            network = not egress_restricted(await self._policies(namespace), labels)
        except ValueError as err:  # a selector the API would not have stored
            raise PodError("CreateContainerConfigError", str(err)) from None
        pod_dir = self.workdir / "pods" / f"{name}-{uuid.uuid4().hex[:6]}"
        pod_dir.mkdir(parents=True, mode=0o755)
        sandbox: PodSandbox | None = None
        tmpfs: list[Path] = []  # what the pod mounted on the host: unmounted when it ends
        try:
            volumes = await make_volumes(self.api, namespace, pod, pod_dir, tmpfs)
            shm = mount_tmpfs(pod_dir / "shm", SHM_BYTES, tmpfs)
            argvs = [
                await self._container_argv(namespace, name, pod, c, volumes, shm, network, pod_dir)
                for c in init + containers
            ]
            sandbox = await asyncio.to_thread(PodSandbox.start, name[:63], network=network)
            ran: list[ContainerResult] = []
            for container, (argv, uid) in zip(init, argvs, strict=False):
                ran.append(await self._run_container(container["name"], sandbox.enter() + argv, uid, pod_dir))
                if ran[-1].exit_code:
                    return PodResult(tuple(ran), network)
            together = [
                self._run_container(c["name"], sandbox.enter() + argv, uid, pod_dir)
                for c, (argv, uid) in zip(containers, argvs[len(init) :], strict=True)
            ]
            return PodResult((*ran, *await asyncio.gather(*together)), network)
        finally:
            if sandbox is not None:
                await asyncio.to_thread(sandbox.stop)
            for path in reversed(tmpfs):
                subprocess.run(["umount", str(path)], capture_output=True)
            shutil.rmtree(pod_dir, ignore_errors=True)  # emptyDirs go with the pod

    async def _container_argv(
        self,
        namespace: str,
        name: str,
        pod: dict[str, Any],
        container: dict[str, Any],
        volumes: dict[str, tuple[str, Path]],
        shm: Path,
        network: bool,
        pod_dir: Path,
    ) -> tuple[list[str], int]:
        """The command line that runs `container` (after nsenter into the pod's namespaces), and its uid."""
        image = await asyncio.to_thread(self.images.get, container["image"])
        uid, gid, groups = identity(pod, container, image.config)
        env = {**image.config.env, "HOSTNAME": name, **await container_env(self.api, namespace, container)}
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
        argv += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        argv += ["bwrap", *NAMESPACES, "--ro-bind", str(image.root), "/", "--proc", "/proc", "--dev", "/dev"]
        argv += ["--bind", str(shm), "/dev/shm"]
        if network:  # the kubelet gives a pod the node's resolver
            for path in ("/etc/resolv.conf", "/etc/hosts"):
                if Path(path).is_file():
                    image.ensure_mount_point(path, is_file=True)
                    argv += ["--ro-bind", path, path]
        argv += mount_args(container, image, volumes, self.host_mounts)
        termination = _termination_file(pod_dir, container["name"])
        termination.touch()
        termination.chmod(0o666)  # the container's uid writes it, as the kubelet's file
        path = container.get("terminationMessagePath") or "/dev/termination-log"
        if not path.startswith("/dev/"):
            image.ensure_mount_point(path, is_file=True)
        argv += ["--bind", str(termination), path]
        argv += ["--chdir", container.get("workingDir") or image.config.workdir, "--clearenv"]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        return [*argv, "--", *command_line(container, image.config)], uid

    @staticmethod
    async def _run_container(name: str, argv: list[str], uid: int, pod_dir: Path) -> ContainerResult:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd="/", env={}
        )
        try:
            out, _ = await proc.communicate()
        except asyncio.CancelledError:  # the pod is deleted: kill it before the event loop goes
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        message = _termination_file(pod_dir, name).read_bytes()[:TERMINATION_LIMIT].decode(errors="replace")
        return ContainerResult(name, proc.returncode, out.decode(errors="replace"), uid, message)

    async def _policies(self, namespace: str) -> list[dict]:
        if self.api is None:
            return []
        try:
            return await self.api.list(NETWORK_POLICIES, namespace)
        except ApiError as err:
            if err.status == 404:  # the emulated API server does not serve NetworkPolicies: there are none
                return []
            raise


def _termination_file(pod_dir: Path, container: str) -> Path:
    return pod_dir / f"{container}.termination-log"
