"""The pod's volumes, made once on the host for all its containers, as the kubelet makes them: emptyDirs as
fresh folders (mode 0777; a tmpfs for medium Memory), Secrets and ConfigMaps as files; and the bubblewrap
arguments that mount them (and the runner's host mounts) into a container."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kubernetes.utils import parse_quantity

from kubevolve.testing import Api
from kubevolve.testing.pods.images import MountedImage
from kubevolve.testing.pods.secrets import read_secret
from kubevolve.testing.pods.spec import PodError


async def make_volumes(
    api: Api | None, namespace: str, pod: dict, pod_dir: Path, tmpfs: list[Path]
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
                mount_tmpfs(folder, int(parse_quantity(limit)) if limit else None, tmpfs)
            else:
                folder.mkdir(parents=True)
            folder.chmod(0o777)
            if fs_group is not None:
                os.chown(folder, -1, int(fs_group))
            made[name] = ("emptyDir", folder)
        elif "secret" in volume:
            await _secret_volume(api, namespace, volume["secret"], folder, fs_group)
            made[name] = ("secret", folder)
        elif "configMap" in volume:
            await _config_map_volume(api, namespace, volume["configMap"], folder)
            made[name] = ("configMap", folder)
        else:
            kind = next(iter(k for k in volume if k != "name"), "?")
            raise PodError("CreateContainerConfigError", f"volume {name!r}: {kind} volumes are not supported")
    return made


def mount_tmpfs(folder: Path, size: int | None, mounted: list[Path]) -> Path:
    """A tmpfs on the host at `folder` (world-writable and sticky), noted in `mounted` for the unmount."""
    folder.mkdir(parents=True)
    options = "mode=1777" + (f",size={size}" if size else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    mounted.append(folder)
    return folder


def mount_args(
    container: dict,
    image: MountedImage,
    volumes: dict[str, tuple[str, Path]],
    host_mounts: dict[str, str],
) -> list[str]:
    """bwrap's arguments for the container's volume mounts and the host mounts, parents before what they
    contain (as runc orders them: a host folder under /tmp is bound inside the /tmp emptyDir)."""
    mounts: list[tuple[str, list[str]]] = [
        (path, ["--bind", host, path]) for host, path in host_mounts.items()
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


async def _config_map_volume(api: Api | None, namespace: str, source: dict, folder: Path) -> None:
    """A ConfigMap's keys as files (world-readable unless defaultMode says otherwise)."""
    config = await api.get("v1/configmaps", namespace, source["name"]) if api else None
    if config is None:
        raise PodError("CreateContainerConfigError", f"configmap {source['name']!r} not found")
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    for key, value in (config.get("data") or {}).items():
        (folder / key).write_text(value)
        (folder / key).chmod(source.get("defaultMode", 0o644))


async def _secret_volume(
    api: Api | None, namespace: str, source: dict, folder: Path, fs_group: int | None
) -> None:
    data = await read_secret(api, namespace, source["secretName"])
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
            raise PodError("CreateContainerConfigError", f"secret item path {item['path']!r} is not relative")
        target = folder / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])
        target.chmod(item.get("mode", source.get("defaultMode", 0o644)))
        if fs_group is not None:
            os.chown(target, -1, int(fs_group))
