"""The sandbox an evaluation worker runs in: bubblewrap where it works, resource limits always.

With bubblewrap the worker sees a read-only system, no network (its own empty network namespace), no other
processes (its own pid namespace), an empty /tmp, no home directories (where credentials such as kubeconfigs
and API keys live), no environment variables but a few it needs, and exactly one writable folder: its slot's
scratch directory, which holds the current candidate's work dir and nothing else.

As root, the worker keeps only the capabilities to drop privileges and to kill what a candidate leaves
behind; each candidate then runs as an unprivileged user (`nobody`) so that the process-count limit applies
(the kernel exempts root from RLIMIT_NPROC). As an ordinary user, the user namespace provides the isolation.

Mode "none" keeps the resource limits, the process group and the timeouts but no namespaces: for Kubernetes
evaluation pods, where the hardened pod is the sandbox and unprivileged user namespaces are often refused.
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kubevolve.errors import KubevolveError

SandboxMode = Literal["auto", "bwrap", "none"]
SANDBOX_UID = 65534  # nobody
PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the folder that holds the kubevolve package
HIDDEN = ("/tmp", "/root", "/home", "/run/secrets", "/var/run/secrets")


class SandboxError(KubevolveError, RuntimeError):
    pass


@functools.cache
def bwrap_works() -> bool:
    """Probe once whether bubblewrap can create its namespaces here (containers often forbid it)."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return False
    argv = [bwrap, *_namespace_flags(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"]
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def resolve_mode(mode: SandboxMode) -> Literal["bwrap", "none"]:
    if mode == "none":
        return "none"
    if bwrap_works():
        return "bwrap"
    if mode == "bwrap":
        raise SandboxError(
            "sandbox 'bwrap' was requested but bubblewrap is not installed or cannot create namespaces here "
            "(install the 'bubblewrap' package, or use sandbox 'none' inside a hardened pod)"
        )
    return "none"


def _namespace_flags() -> list[str]:
    common = ["--die-with-parent", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    if os.geteuid() == 0:
        caps = ["--cap-drop", "ALL"] + [
            f for c in ("SETUID", "SETGID", "KILL") for f in ("--cap-add", f"CAP_{c}")
        ]
        return common + caps
    return common + ["--unshare-user", "--cap-drop", "ALL"]


def _visible_paths(extra: list[Path]) -> list[Path]:
    """What the worker must read: the interpreter, its libraries, kubevolve itself and the task."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent}
    paths |= {Path(p) for p in sys.path if p and Path(p).exists()}
    paths |= set(extra)
    hidden = [Path(h) for h in HIDDEN]
    # only paths under a hidden folder need binding again; keep the outermost ones
    needed = sorted(
        p.resolve() for p in paths if any(p.resolve().is_relative_to(h) and p.resolve() != h for h in hidden)
    )
    result: list[Path] = []
    for path in needed:
        if not any(path.is_relative_to(kept) for kept in result):
            result.append(path)
    return result


def _parents_traversable(path: Path) -> list[str]:
    """bwrap creates missing mount points mode 0700; the unprivileged candidate must traverse them."""
    flags: list[str] = []
    for parent in reversed(path.parents):
        if str(parent) != "/" and any(parent.is_relative_to(h) and parent != Path(h) for h in HIDDEN):
            flags += ["--perms", "0755", "--dir", str(parent)]
    return flags


@dataclass
class WorkerLaunch:
    argv: list[str]
    env: dict[str, str]
    drop_to_uid: int | None = None
    mode: str = "none"
    notes: list[str] = field(default_factory=list)


def _installed() -> bool:
    """kubevolve lives in a site-packages folder, which the worker's interpreter reads anyway. Putting that
    folder on PYTHONPATH would place every installed package before the standard library."""
    site_dirs = {*site.getsitepackages(), site.getusersitepackages()}
    return any(Path(d).resolve() == PACKAGE_ROOT for d in site_dirs)


def worker_env(threads: int, drop_to_uid: int | None) -> dict[str, str]:
    """The worker's whole environment: nothing of the host's (no API keys), a few settings it needs."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    if not _installed():  # a checkout or a worktree: the worker imports the same kubevolve as the engine
        env["PYTHONPATH"] = str(PACKAGE_ROOT)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    for var in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            env[var] = os.environ[var]
    if drop_to_uid is not None:
        env["KUBEVOLVE_SANDBOX_UID"] = str(drop_to_uid)
    return env


def build_worker_launch(
    mode: SandboxMode, *, scratch: Path, task_root: Path, evaluator: Path, threads: int = 1, gpus: int = 0
) -> WorkerLaunch:
    """The command line that starts one evaluation worker for a slot whose scratch dir is `scratch`."""
    resolved = resolve_mode(mode)
    python = [sys.executable, "-m", "kubevolve.loop.engineer.worker", str(evaluator), str(task_root)]
    if resolved == "none":
        return WorkerLaunch(python, worker_env(threads, None), None, "none")
    drop = SANDBOX_UID if os.geteuid() == 0 else None
    argv = [shutil.which("bwrap") or "bwrap", *_namespace_flags(), "--new-session", "--ro-bind", "/", "/"]
    argv += ["--dev-bind", "/dev", "/dev"] if gpus else ["--dev", "/dev"]
    argv += ["--proc", "/proc"]
    for hidden in HIDDEN:
        if Path(hidden).is_dir():
            argv += ["--tmpfs", hidden]
    for path in _visible_paths([task_root, PACKAGE_ROOT]):
        argv += _parents_traversable(path) + ["--ro-bind", str(path), str(path)]
    argv += _parents_traversable(scratch) + ["--bind", str(scratch), str(scratch)]
    argv += ["--chdir", str(scratch), "--clearenv"]
    env = worker_env(threads, drop)
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return WorkerLaunch(argv + python, env, drop, "bwrap")
