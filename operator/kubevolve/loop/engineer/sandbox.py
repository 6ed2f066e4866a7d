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

Tasks with a runner (`run.py`, see judge.py and zygote.py) split a slot in two: a trusted judge process,
started plainly, and the zygote it starts, inside this sandbox, which forks each candidate into namespaces of
its own. `build_judge_launch` builds both command lines. Tasks without a runner still run their evaluator in
the legacy worker (worker.py), with the candidate in its address space (`build_worker_launch`).

In a Kubernetes evaluation pod the zygote is not started here at all: it is the candidate container's own
process, which connects to the judge's socket (`zygote_socket`, the pod layout); the pod is its sandbox.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kubevolve.errors import KubevolveError
from kubevolve.sdk.judging import SEED_VARIABLE

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


def _visible_paths(extra: list[Path], interpreter: bool = True) -> list[Path]:
    """What the worker must read: the interpreter, its libraries (unless it runs another Python), kubevolve
    itself and the task."""
    paths = set(extra)
    if interpreter:
        paths |= {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent}
        paths |= {Path(p) for p in sys.path if p and Path(p).exists()}
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
    judged: bool = False  # a judge process with a zygote (the task has a runner), not the legacy worker
    slot_uid: int | None = None  # the judged slot's own uid (root only)
    remote_zygote: bool = False  # the pod layout: the zygote is another container's process, its uid alone


def _installed() -> bool:
    """kubevolve lives in a site-packages folder, which the worker's interpreter reads anyway. Putting that
    folder on PYTHONPATH would place every installed package before the standard library."""
    site_dirs = {*site.getsitepackages(), site.getusersitepackages()}
    return any(Path(d).resolve() == PACKAGE_ROOT for d in site_dirs)


def checkout_root() -> str | None:
    """What a child interpreter needs on its PYTHONPATH to import this kubevolve: the folder holding the
    package when it runs from a checkout or a worktree, None when it is installed."""
    return None if _installed() else str(PACKAGE_ROOT)


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
    root = checkout_root()
    if root is not None:  # a checkout or a worktree: the worker imports the same kubevolve as the engine
        env["PYTHONPATH"] = root
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    # KUBEVOLVE_NUM_NODES and KUBEVOLVE_HOSTFILE: a multi-node TrainJob's layout (launcher.node_layout), no
    # secret in it; a runner that cannot see it would train on the launcher's node alone without a word
    passed = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    for var in (*passed, "KUBEVOLVE_NUM_NODES", "KUBEVOLVE_HOSTFILE"):
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


def _zygote_flags(root: bool) -> list[str]:
    """bwrap flags of a slot's zygote. As root it keeps what the per-candidate set-up needs (new namespaces and
    mounts, bringing up the loopback of a candidate's network namespace, the change to the slot's uid,
    killing the candidate); without root, the user namespace bwrap makes lets a keeper make a nested one per
    candidate, so it needs no capability at all."""
    common = ["--die-with-parent", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    if root:
        caps = ("SYS_ADMIN", "NET_ADMIN", "SETUID", "SETGID", "KILL")
        return common + ["--cap-drop", "ALL"] + [f for c in caps for f in ("--cap-add", f"CAP_{c}")]
    return common + ["--unshare-user", "--cap-drop", "ALL"]


def zygote_command(
    mode: Literal["bwrap", "none"],
    *,
    task_root: Path,
    runner: Path,
    env: dict[str, str],
    gpus: int = 0,
    root: bool | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line of a slot's zygote (the judge appends its control descriptor)."""
    zygote = [python, "-P", "-m", "kubevolve.loop.engineer.zygote", str(runner), str(task_root), mode]
    if mode == "none":
        return zygote
    argv = [shutil.which("bwrap") or "bwrap", *_zygote_flags(os.geteuid() == 0 if root is None else root)]
    argv += ["--new-session", "--ro-bind", "/", "/"]
    argv += ["--dev-bind", "/dev", "/dev"] if gpus else ["--dev", "/dev"]
    argv += ["--proc", "/proc"]
    for hidden in HIDDEN:
        if Path(hidden).is_dir():
            argv += ["--tmpfs", hidden]
    for path in _visible_paths([task_root, PACKAGE_ROOT], interpreter=python == sys.executable):
        argv += _parents_traversable(path) + ["--ro-bind", str(path), str(path)]
    argv += ["--chdir", "/", "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return argv + zygote


def build_judge_launch(
    mode: SandboxMode,
    *,
    task_root: Path,
    evaluator: Path,
    runner: Path,
    uid: int | None,
    scratch_root: Path,
    judge_seed: int,
    threads: int = 1,
    gpus: int = 0,
    zygote_socket: Path | None = None,
    shared_root: Path | None = None,
) -> WorkerLaunch:
    """The command line of a slot's judge, which carries the command line of its zygote. `judge_seed` goes
    into the judge's environment only (kubevolve.sdk.judging.judge_seed), never the zygote's. With
    `zygote_socket` (the pod layout) the zygote runs in the candidate's container, without namespaces of its
    own, and connects there; `shared_root` is the volume it writes."""
    resolved: Literal["bwrap", "none"] = "none" if zygote_socket is not None else resolve_mode(mode)
    env = worker_env(threads, None)
    judge_env = dict(env, **{SEED_VARIABLE: str(judge_seed)})
    zygote_argv = (
        []
        if zygote_socket is not None
        else zygote_command(resolved, task_root=task_root, runner=runner, env=env, gpus=gpus)
    )
    config = {
        "evaluator": str(evaluator),
        "task_root": str(task_root),
        "mode": resolved,
        "zygote_argv": zygote_argv,
        "zygote_env": env,
        "uid": uid,
        "scratch_root": str(scratch_root),
        "zygote_socket": None if zygote_socket is None else str(zygote_socket),
        "runner": str(runner),
        "shared_root": None if shared_root is None else str(shared_root),
    }
    argv = [sys.executable, "-P", "-m", "kubevolve.loop.engineer.judge", json.dumps(config)]
    return WorkerLaunch(
        argv, judge_env, None, resolved, judged=True, slot_uid=uid, remote_zygote=zygote_socket is not None
    )
