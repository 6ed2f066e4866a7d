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
import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
from kubernetes.utils import parse_quantity

from kubevolve.errors import KubevolveError
from kubevolve.testing import Api, ApiError

NETWORK_POLICIES = "networking.k8s.io/v1/networkpolicies"
# bwrap, per container: a user namespace (which the container may not nest: RuntimeDefault's seccomp refuses
# that as well), its own pid and mount namespaces, the command as pid 1 as in a container (the evaluation
# worker's sweep of its pid namespace spares pid 1: the step). Network, ipc and uts are the pod's (PodSandbox).
NAMESPACES = ["--unshare-user", "--unshare-pid", "--unshare-cgroup-try", "--disable-userns", "--as-pid-1"]
NAMESPACES += ["--die-with-parent", "--new-session"]
SHM_BYTES = 64 << 20  # a container runtime's default /dev/shm
TERMINATION_LIMIT = 4096  # the kubelet keeps at most this much of a termination message
TOOLS = ("buildah", "bwrap", "setpriv", "nsenter", "mount", "umount")


class PodError(KubevolveError):
    """A container could not start; `reason` is what the kubelet would report (e.g. ErrImageNeverPull)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageConfig:
    """What a pod takes from its image when its spec does not say: the OCI image config."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    user: str
    workdir: str

    @classmethod
    def from_oci(cls, config: dict[str, Any]) -> ImageConfig:
        env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
        return cls(
            entrypoint=list(config.get("Entrypoint") or []),
            cmd=list(config.get("Cmd") or []),
            env=env,
            user=config.get("User") or "0",
            workdir=config.get("WorkingDir") or "/",
        )


@dataclass(frozen=True)
class MountedImage:
    name: str
    container: str  # the buildah working container whose root filesystem is mounted
    root: Path  # that root filesystem, bound where every uid can reach it
    config: ImageConfig

    def ensure_mount_point(self, path: str, *, is_file: bool = False) -> None:
        """Create a missing mount point in the working container (never in the image), as runc does before it
        makes the root read-only. A symlink on the way is refused: it could point out of the image."""
        target = self.root
        parts = [p for p in Path(path).parts if p != "/"]
        if not parts or ".." in parts:
            raise PodError("CreateContainerError", f"mount path {path!r} is not a plain absolute path")
        for i, part in enumerate(parts):
            target = target / part
            if target.is_symlink():
                raise PodError(
                    "CreateContainerError", f"mount path {path}: {part!r} is a symlink in the image"
                )
            if not target.exists():
                if is_file and i == len(parts) - 1:
                    target.touch(mode=0o644)
                else:
                    target.mkdir(mode=0o755, exist_ok=True)  # another pod may be making it too


def declare_network_policies(k: Any) -> None:
    """Serve NetworkPolicies from kmock (the runner reads them; the operator does not touch them)."""
    k.resources[NETWORK_POLICIES] = kmock.ResourceInfo(
        kind="NetworkPolicy", namespaced=True, verbs={"get", "list", "create"}
    )


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


def _buildah(*args: str) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def image_exists(image: str) -> bool:
    return (
        subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True).returncode == 0
    )


class ImageMounts:
    """The kubelet's image cache: each image's root filesystem mounted once (in a buildah working container)
    and bound under `workdir`, since buildah's storage is reachable by root only."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self._mounted: dict[str, MountedImage] = {}
        self._lock = threading.Lock()

    def get(self, image: str) -> MountedImage:
        with self._lock:
            if image not in self._mounted:
                self._mounted[image] = self._mount(image)
            return self._mounted[image]

    def _mount(self, image: str) -> MountedImage:
        if not image_exists(image):
            raise PodError("ErrImageNeverPull", f"image {image!r} is not built here (make images)")
        config = json.loads(_buildah("inspect", "--type", "image", image))["OCIv1"].get("config") or {}
        container = _buildah(
            "from", "--pull=never", "--quiet", "--name", f"kubelet-{uuid.uuid4().hex[:8]}", image
        )
        try:
            merged = _buildah("mount", container)
            root = self.workdir / "images" / container
            root.mkdir(parents=True)
            subprocess.run(["mount", "--bind", merged, str(root)], check=True, capture_output=True)
        except BaseException:
            _buildah("rm", container)
            raise
        return MountedImage(image, container, root, ImageConfig.from_oci(config))

    def close(self) -> None:
        with self._lock:
            for mounted in self._mounted.values():
                subprocess.run(["umount", str(mounted.root)], capture_output=True)
                with contextlib.suppress(RuntimeError):
                    _buildah("rm", mounted.container)  # unmounts it too
            self._mounted.clear()


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


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions) against a pod's labels; {} selects every pod."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op)
        if ok is None:
            raise PodError("CreateContainerConfigError", f"unknown selector operator {op!r}")
        if not ok:
            return False
    return True


def egress_restricted(policies: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    """Whether some NetworkPolicy restricts this pod's egress (and none of those that select it allows all)."""
    restricting = []
    for policy in policies:
        spec = policy.get("spec") or {}
        types = spec.get("policyTypes") or ["Ingress"] + (["Egress"] if spec.get("egress") else [])
        if "Egress" in types and _selects(spec.get("podSelector") or {}, labels):
            restricting.append(spec)
    allows_all = any(
        not rule.get("to") and not rule.get("ports")
        for spec in restricting
        for rule in spec.get("egress") or []
    )
    return bool(restricting) and not allows_all


def command_line(container: dict[str, Any], image: ImageConfig) -> list[str]:
    """Kubernetes' rule: `command` replaces the entrypoint (and drops the image's cmd), `args` the cmd."""
    if container.get("command"):
        argv = list(container["command"]) + list(container.get("args") or [])
    else:
        argv = image.entrypoint + list(container.get("args") or image.cmd)
    if not argv:
        raise PodError("CreateContainerError", "no command: neither the container nor the image names one")
    return argv


def identity(
    pod: dict[str, Any], container: dict[str, Any], image: ImageConfig
) -> tuple[int, int, list[int]]:
    """The uid, gid and supplementary groups (fsGroup, supplementalGroups) the container runs as, after the
    checks the kubelet makes."""
    pod_sc, sc = pod.get("securityContext") or {}, container.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        raise PodError("CreateContainerConfigError", "this runner runs read-only root filesystems only")
    if sc.get("privileged") or (sc.get("capabilities") or {}).get("add"):
        raise PodError(
            "CreateContainerConfigError", "privileged containers and added capabilities are not run"
        )
    user, _, group = image.user.partition(":")
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if uid is None:
        if not user.isdigit():  # the kubelet cannot check a user name against runAsNonRoot either
            raise PodError("CreateContainerConfigError", f"image has non-numeric user ({user})")
        uid = int(user)
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if gid is None:
        gid = int(group) if group.isdigit() else 0
    if uid == 0 and (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        raise PodError("CreateContainerConfigError", "container has runAsNonRoot and image will run as root")
    groups = [pod_sc["fsGroup"]] if "fsGroup" in pod_sc else []
    groups += pod_sc.get("supplementalGroups") or []
    return int(uid), int(gid), list(dict.fromkeys(int(g) for g in groups))


class PodSandbox:
    """The pod's shared namespaces, as the pause container holds them: network (a fresh one with only
    loopback, or the host's), ipc and uts (the pod's hostname). Its containers join them with nsenter."""

    def __init__(self, proc: subprocess.Popen[bytes], pid: int):
        self._proc, self.pid = proc, pid

    @classmethod
    def start(cls, hostname: str, *, network: bool) -> PodSandbox:
        read, write = os.pipe()
        argv = ["bwrap", "--unshare-ipc", "--unshare-uts", *([] if network else ["--unshare-net"])]
        argv += ["--hostname", hostname, "--die-with-parent", "--ro-bind", "/", "/"]
        argv += ["--info-fd", str(write), "--", "sleep", "infinity"]
        try:
            proc = subprocess.Popen(argv, pass_fds=(write,), stderr=subprocess.PIPE)
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        with os.fdopen(read, "rb") as info:
            data = info.read()  # bwrap writes its JSON and closes the fd (or exits, having failed)
        try:
            return cls(proc, int(json.loads(data)["child-pid"]))
        except (ValueError, KeyError):
            proc.kill()
            _, err = proc.communicate()
            raise PodError(
                "CreatePodSandboxError", f"bwrap: {err.decode(errors='replace').strip()}"
            ) from None

    def enter(self) -> list[str]:
        return ["nsenter", f"--target={self.pid}", "--net", "--ipc", "--uts", "--"]

    def stop(self) -> None:
        self._proc.kill()  # its child dies with it (--die-with-parent)
        self._proc.communicate()


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
        network = not egress_restricted(await self._policies(namespace), labels)
        pod_dir = self.workdir / "pods" / f"{name}-{uuid.uuid4().hex[:6]}"
        pod_dir.mkdir(parents=True, mode=0o755)
        sandbox: PodSandbox | None = None
        tmpfs: list[Path] = []  # what the pod mounted on the host: unmounted when it ends
        try:
            volumes = await self._volumes(namespace, pod, pod_dir, tmpfs)
            shm = self._tmpfs(pod_dir / "shm", SHM_BYTES, tmpfs)
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
        env = {**image.config.env, "HOSTNAME": name, **await self._env(namespace, container)}
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
        argv += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        argv += ["bwrap", *NAMESPACES, "--ro-bind", str(image.root), "/", "--proc", "/proc", "--dev", "/dev"]
        argv += ["--bind", str(shm), "/dev/shm"]
        if network:  # the kubelet gives a pod the node's resolver
            for path in ("/etc/resolv.conf", "/etc/hosts"):
                if Path(path).is_file():
                    image.ensure_mount_point(path, is_file=True)
                    argv += ["--ro-bind", path, path]
        argv += self._mount_args(container, image, volumes)
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

    async def _secret(self, namespace: str, name: str) -> dict[str, str] | None:
        secret = await self.api.get("v1/secrets", namespace, name) if self.api else None
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    async def _env(self, namespace: str, container: dict) -> dict[str, str]:
        if container.get("envFrom"):
            raise PodError("CreateContainerConfigError", "envFrom is not supported by this runner")
        env: dict[str, str] = {}
        for entry in container.get("env") or []:
            if "value" in entry or not entry.get("valueFrom"):
                env[entry["name"]] = entry.get("value", "")
                continue
            ref = entry["valueFrom"].get("secretKeyRef")
            if ref is None:
                raise PodError(
                    "CreateContainerConfigError", f"env {entry['name']}: only secretKeyRef is supported"
                )
            data = await self._secret(namespace, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                what = (
                    f"secret {ref['name']!r} not found"
                    if data is None
                    else f"secret {ref['name']!r} has no key {ref['key']!r}"
                )
                raise PodError("CreateContainerConfigError", what)
            env[entry["name"]] = data[ref["key"]]
        return env

    async def _policies(self, namespace: str) -> list[dict]:
        if self.api is None:
            return []
        try:
            return await self.api.list(NETWORK_POLICIES, namespace)
        except ApiError as err:
            if err.status == 404:  # the emulated API server does not serve NetworkPolicies: there are none
                return []
            raise

    async def _volumes(
        self, namespace: str, pod: dict, pod_dir: Path, tmpfs: list[Path]
    ) -> dict[str, tuple[str, Path]]:
        """The pod's volumes, each made once on the host for all its containers: {name: (kind, folder)}."""
        fs_group = (pod.get("securityContext") or {}).get("fsGroup")
        made: dict[str, tuple[str, Path]] = {}
        for volume in pod.get("volumes") or []:
            name = volume["name"]
            folder = pod_dir / "volumes" / name
            if name in made:
                raise PodError("CreateContainerConfigError", f"volume {name!r} is declared twice")
            if "emptyDir" in volume:
                empty_dir = volume["emptyDir"] or {}
                if empty_dir.get("medium") == "Memory":  # one tmpfs, shared by the containers
                    limit = empty_dir.get("sizeLimit")
                    self._tmpfs(folder, int(parse_quantity(limit)) if limit else None, tmpfs)
                else:
                    folder.mkdir(parents=True)
                folder.chmod(0o777)
                if fs_group is not None:
                    os.chown(folder, -1, int(fs_group))
                made[name] = ("emptyDir", folder)
            elif "secret" in volume:
                await self._secret_volume(namespace, volume["secret"], folder, fs_group)
                made[name] = ("secret", folder)
            elif "configMap" in volume:
                await self._config_map_volume(namespace, volume["configMap"], folder)
                made[name] = ("configMap", folder)
            else:
                kind = next(iter(k for k in volume if k != "name"), "?")
                raise PodError(
                    "CreateContainerConfigError", f"volume {name!r}: {kind} volumes are not supported"
                )
        return made

    @staticmethod
    def _tmpfs(folder: Path, size: int | None, mounted: list[Path]) -> Path:
        """A tmpfs on the host at `folder` (world-writable and sticky), noted in `mounted` for the unmount."""
        folder.mkdir(parents=True)
        options = "mode=1777" + (f",size={size}" if size else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
        mounted.append(folder)
        return folder

    def _mount_args(
        self, container: dict, image: MountedImage, volumes: dict[str, tuple[str, Path]]
    ) -> list[str]:
        """bwrap's arguments for the container's volume mounts and the host mounts, parents before what they
        contain (as runc orders them: a host folder under /tmp is bound inside the /tmp emptyDir)."""
        mounts: list[tuple[str, list[str]]] = [
            (path, ["--bind", host, path]) for host, path in self.host_mounts.items()
        ]
        for mount in container.get("volumeMounts") or []:
            path, volume = mount["mountPath"], volumes.get(mount["name"])
            if volume is None:
                raise PodError("CreateContainerConfigError", f"volumeMount {mount['name']!r}: no such volume")
            kind, folder = volume
            read_only = kind in ("secret", "configMap") or mount.get("readOnly")
            mounts.append((path, ["--ro-bind" if read_only else "--bind", str(folder), path]))
        args: list[str] = []
        for path, mount_args in sorted(mounts, key=lambda m: len(Path(m[0]).parts)):
            if not path.startswith(("/dev/", "/proc/")):
                image.ensure_mount_point(path)
            args += mount_args
        return args

    async def _config_map_volume(self, namespace: str, source: dict, folder: Path) -> None:
        """A ConfigMap's keys as files (world-readable unless defaultMode says otherwise)."""
        config = await self.api.get("v1/configmaps", namespace, source["name"]) if self.api else None
        if config is None:
            raise PodError("CreateContainerConfigError", f"configmap {source['name']!r} not found")
        folder.mkdir(parents=True)
        folder.chmod(0o755)
        for key, value in (config.get("data") or {}).items():
            (folder / key).write_text(value)
            (folder / key).chmod(source.get("defaultMode", 0o644))

    async def _secret_volume(self, namespace: str, source: dict, folder: Path, fs_group: int | None) -> None:
        data = await self._secret(namespace, source["secretName"])
        if data is None and not source.get("optional"):
            raise PodError("CreateContainerConfigError", f"secret {source['secretName']!r} not found")
        items = source.get("items") or [{"key": k, "path": k} for k in data or {}]
        folder.mkdir(parents=True)
        folder.chmod(0o755)
        for item in items:
            if data is None or item["key"] not in data:
                raise PodError(
                    "CreateContainerConfigError",
                    f"secret {source['secretName']!r} has no key {item['key']!r}",
                )
            if Path(item["path"]).is_absolute() or ".." in Path(item["path"]).parts:
                raise PodError(
                    "CreateContainerConfigError", f"secret item path {item['path']!r} is not relative"
                )
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])
            target.chmod(item.get("mode", source.get("defaultMode", 0o644)))
            if fs_group is not None:
                os.chown(target, -1, int(fs_group))


def _termination_file(pod_dir: Path, container: str) -> Path:
    return pod_dir / f"{container}.termination-log"
