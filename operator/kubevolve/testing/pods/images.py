"""The kubelet's image cache, with no container daemon: buildah mounts each image's root filesystem once (in a
working container), bound where every uid can reach it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from kubevolve.testing.pods.spec import ImageConfig, PodError


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
