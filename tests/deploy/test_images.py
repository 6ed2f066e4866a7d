"""Static checks of the container images: they cannot be built here (no container runtime), so check what a
reviewer would: pinned bases, multi-stage builds, a non-root user, and entrypoints that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

from kubevolve.cli.app import app
from tests.kit.paths import REPO

IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def test_the_three_images_exist():
    assert {p.parent.name for p in DOCKERFILES} == {"operator", "worker", "trainer"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_is_pinned_multistage_and_non_root(dockerfile):
    steps = instructions(dockerfile)
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    froms = [a.split()[0] for kind, a in steps if kind == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the final image"
    for base in froms:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert ":" in resolved and not resolved.endswith(":latest"), f"unpinned base {resolved}"
    users = [a for kind, a in steps if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the final stage must run as non-root"
    assert any(kind == "COPY" and "--from=build" in a for kind, a in steps)
    installs = " ".join(a for kind, a in steps if kind == "RUN")
    assert "pip install ." in installs or 'pip install ".[' in installs


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_entrypoint_is_a_real_command(dockerfile):
    entry = [a for kind, a in instructions(dockerfile) if kind == "ENTRYPOINT"][-1]
    argv = re.findall(r'"([^"]+)"', entry)
    assert argv[0] == "kubevolve"
    commands = get_command(app).commands  # type: ignore[attr-defined]
    for word in argv[1:]:
        assert word in commands, f"{dockerfile}: `kubevolve {word}` does not exist"
