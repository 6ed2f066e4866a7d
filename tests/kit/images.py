"""The images `make images` builds, for the tests that run pods in them (`make test-images`).

Such a test is skipped where it cannot run (not root, no buildah or bubblewrap, the image not built) and fails
instead when its image is one of KUBEVOLVE_REQUIRE_IMAGES (`make test-images` sets it to the images it has
just built, IMAGES="operator worker trainer" by default)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubevolve.testing.pods.images import image_exists
from kubevolve.testing.pods.runner import unavailable
from tests.kit.paths import REPO

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
REGISTRY = os.environ.get("KUBEVOLVE_IMAGES_REGISTRY", "localhost")  # images/build.sh's REGISTRY
REQUIRED = set(os.environ.get("KUBEVOLVE_REQUIRE_IMAGES", "").split())


def image_name(name: str) -> str:
    return f"{REGISTRY}/kubevolve-{name}:{VERSION}"


def built_image(name: str) -> str:
    """The name of the built image `name` (operator, worker, trainer), if pods can run in it here."""
    reason = unavailable()
    if reason is None and not image_exists(image_name(name)):
        reason = f"{image_name(name)} is not built (make images)"
    if reason is not None:
        (pytest.fail if name in REQUIRED else pytest.skip)(reason)
    return image_name(name)


def hardened_pod(image: str, **container: Any) -> dict[str, Any]:
    """A pod hardened as the operator's step pods are (runtime/kubernetes/jobs.py), its uid left to the image;
    `container` adds to or overrides its one container (command, args, env, ...)."""
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "step",
                "image": image,
                "securityContext": {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
                **container,
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }


def derived_image(base: str, files: dict[Path, tuple[str, str | None]]) -> str:
    """A throwaway image: `base` plus host files copied in, {host path: (path in the image, mode or None)},
    owned by root, as a lab's own Dockerfile adds its task (`COPY my_task /opt/kubevolve/tasks/...`)."""
    tag = f"localhost/kubevolve-test-{uuid.uuid4().hex[:8]}:latest"
    container = _buildah("from", "--pull=never", "--quiet", base)
    try:
        for source, (target, mode) in files.items():
            chmod = ["--chmod", mode] if mode else []
            _buildah("copy", "--quiet", "--chown", "0:0", *chmod, container, str(source), target)
        _buildah("commit", "--quiet", container, tag)
    finally:
        _buildah("rm", container)
    return tag


def pod_store(uid: int) -> Path:
    """A SQLite store file that the test (root) and its pods (`uid`) share, in a folder of its own outside
    pytest's tmp_path (which only root can reach). The file exists and belongs to `uid`, so that the WAL files
    SQLite creates next to it are `uid`'s too (SQLite gives them the database's owner)."""
    folder = Path(tempfile.mkdtemp(prefix="kubevolve-store-"))
    database = folder / "cluster-store.db"
    database.touch()
    for path in (folder, database):
        os.chown(path, uid, uid)
    folder.chmod(0o755)
    return database


def remove_image(tag: str) -> None:
    _buildah("rmi", tag)


def _buildah(*args: str) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()
