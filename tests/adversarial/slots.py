"""A judged slot driven from the test's own process, as the engine's judge worker drives one: its zygote in
bubblewrap as root (the candidate becomes the slot's uid), or as an unprivileged uid of its own (`setpriv`,
with the system Python, which that uid can read), where each candidate's namespaces come from a keeper."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubevolve.loop.engineer import slot_uids
from kubevolve.loop.engineer.judge import _load_judge
from kubevolve.loop.engineer.judge_config import Config
from kubevolve.loop.engineer.judge_slot import JudgeSlot
from kubevolve.loop.engineer.sandbox import bwrap_works, worker_env, zygote_command
from tests.kit.toy_task import write_task

SYSTEM_PYTHON = "/usr/bin/python3"


def unprivileged_bwrap_works(uid: int) -> bool:
    probe = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "bwrap", "--unshare-user"]
    probe += ["--unshare-pid", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    probe += [SYSTEM_PYTHON, "-P", "-c", ""]
    try:
        return subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@contextlib.contextmanager
def judged_slot(*, privileged: bool) -> Iterator[tuple[JudgeSlot, Any, int]]:
    """(the slot, the toy task's judge module, the slot's uid); skips where the machine cannot do it. On the
    way out no process of the slot's uid may be left."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a slot's uid of its own)")
    if not bwrap_works():
        pytest.skip("bubblewrap cannot create namespaces here")
    if not privileged and (not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON)):
        pytest.skip("needs setpriv and a system Python")
    (slot_uid,) = slot_uids.allocate(1)
    root = Path(tempfile.mkdtemp(prefix="kubevolve-slot-", dir="/var/tmp"))
    try:
        os.chmod(root, 0o755)
        if not privileged and not unprivileged_bwrap_works(slot_uid.uid):
            pytest.skip("bubblewrap cannot make user namespaces for an unprivileged user here")
        task_dir = write_task(root / "toy")
        env = worker_env(1, None)
        runner = task_dir / "run.py"
        if privileged:
            argv = zygote_command("bwrap", task_root=task_dir, runner=runner, env=env, root=True)
        else:
            argv = ["setpriv", f"--reuid={slot_uid.uid}", f"--regid={slot_uid.uid}", "--clear-groups"]
            argv += zygote_command(
                "bwrap", task_root=task_dir, runner=runner, env=env, root=False, python=SYSTEM_PYTHON
            )
        config = Config(
            evaluator=str(task_dir / "evaluate.py"),
            task_root=str(task_dir),
            mode="bwrap",
            zygote_argv=argv,
            zygote_env=env,
            uid=slot_uid.uid if privileged else None,
            scratch_root=str(root),
        )
        slot = JudgeSlot(config)
        slot.zygote.start()
        judge = _load_judge(config.evaluator, config.task_root)
        yield slot, judge, slot_uid.uid
        slot.reset_zygote()
        deadline = time.monotonic() + 10  # tearing down nested pid namespaces takes the kernel a moment
        while slot_uids.processes_of_uid(slot_uid.uid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert slot_uids.processes_of_uid(slot_uid.uid) == [], "a process of the slot's uid survived"
    finally:
        shutil.rmtree(root, ignore_errors=True)
        slot_uid.release()


def toy_job(uid: int, code: str, *, network: str = "isolated", timeout: float = 10) -> dict[str, Any]:
    """A job of the toy task's quick stage for `code`, as the pool would send it."""
    return {
        "id": "job",
        "code": code,
        "program_name": "initial.py",
        "required": ["solve"],
        "stage": "quick",
        "timeout": timeout,
        "cpu_seconds": timeout,
        "memory_bytes": 256 << 20,
        "file_bytes": 4 << 20,
        "disk_bytes": 16 << 20,
        # RLIMIT_NPROC counts all of the uid's processes: the zygote, keepers, inits and the waiting spare
        "max_processes": len(slot_uids.processes_of_uid(uid)) + 32 + 3,
        "network": network,
    }
