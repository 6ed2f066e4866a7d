"""What a container takes from its pod spec and its image, after the checks the kubelet makes: its command
line, its uid, gid and groups; and PodError, what the kubelet reports when a container cannot start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubevolve.errors import KubevolveError


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
