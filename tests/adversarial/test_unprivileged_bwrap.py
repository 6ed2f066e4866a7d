"""bubblewrap without root: a candidate's namespaces come from a keeper that first enters a user namespace of
its own (the only place an unprivileged process may create the others).

The engine's tests run as root here, so this one starts the slot's zygote as a uid of its own (allocated like
a slot's, so nothing else runs as it) with `setpriv`, and with the system Python, which an unprivileged user
can read. The judge runs in this process, as the engine's judge worker would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from kubevolve.loop.engineer import judge as judging
from kubevolve.loop.engineer import slot_uids
from kubevolve.loop.engineer.sandbox import bwrap_works, worker_env, zygote_command
from tests.adversarial import candidates
from tests.adversarial.harness import FAKE_KEY
from tests.kit.toy_task import write_task

SYSTEM_PYTHON = "/usr/bin/python3"


def _unprivileged_bwrap_works(uid: int) -> bool:
    probe = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "bwrap", "--unshare-user"]
    probe += [
        "--unshare-pid",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        SYSTEM_PYTHON,
        "-P",
        "-c",
        "",
    ]
    try:
        return subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def unprivileged_slot():
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root (to become another uid), setpriv and a system Python")
    if not bwrap_works():
        pytest.skip("bubblewrap cannot create namespaces here")
    (slot_uid,) = slot_uids.allocate(1)
    root = Path(tempfile.mkdtemp(prefix="kubevolve-unprivileged-", dir="/var/tmp"))
    try:
        os.chmod(root, 0o755)
        if not _unprivileged_bwrap_works(slot_uid.uid):
            pytest.skip("bubblewrap cannot make user namespaces for an unprivileged user here")
        task_dir = write_task(root / "toy")
        env = worker_env(1, None)
        argv = ["setpriv", f"--reuid={slot_uid.uid}", f"--regid={slot_uid.uid}", "--clear-groups"]
        argv += zygote_command(
            "bwrap", task_root=task_dir, runner=task_dir / "run.py", env=env, root=False, python=SYSTEM_PYTHON
        )
        config = judging.Config(
            evaluator=str(task_dir / "evaluate.py"),
            task_root=str(task_dir),
            mode="bwrap",
            zygote_argv=argv,
            zygote_env=env,
            uid=None,
            scratch_root=str(root),
        )
        slot = judging.JudgeSlot(config)
        slot.zygote.start()
        judge = judging._load_judge(config.evaluator, config.task_root)
        yield slot, judge, slot_uid.uid
        slot.reset_zygote()
        deadline = time.monotonic() + 10  # tearing down nested pid namespaces takes the kernel a moment
        while slot_uids.processes_of_uid(slot_uid.uid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert slot_uids.processes_of_uid(slot_uid.uid) == [], "a process of the slot's uid survived"
    finally:
        shutil.rmtree(root, ignore_errors=True)
        slot_uid.release()


def _evaluate(slot, judge, uid: int, code: str) -> dict:
    job = {
        "id": "job",
        "code": code,
        "program_name": "initial.py",
        "required": ["solve"],
        "stage": "quick",
        "timeout": 10,
        "cpu_seconds": 10,
        "memory_bytes": 256 << 20,
        "file_bytes": 4 << 20,
        "disk_bytes": 16 << 20,
        # RLIMIT_NPROC counts all of the uid's processes: the zygote, keepers, inits and the waiting spare
        "max_processes": len(slot_uids.processes_of_uid(uid)) + 32 + 3,
    }
    reply, candidate = judging.run_job(judge, slot, job)
    candidate.close()
    slot.prepare_spare()
    return reply


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("patches the judge", None),
        ("forges a result on every fd", None),
        ("imports os by a computed name and runs a shell", None),
        ("closes every fd", "exited with status 1 without a reply"),
        ("starts 100,000 threads", "can't start new thread"),
        ("signals every process it may", None),
        ("leaves files and a module for the next candidate", None),
        ("starts orphans in a new session", None),
        ("reads other processes' environments", None),
        ("fills the disk with files under the size limit", "No space left on device"),
        ("connects to a loopback service", "Network is unreachable"),
        ("segfaults", "killed by SIGSEGV"),
    ],
)
def test_hostile_candidate_without_root(unprivileged_slot, name, expected):
    slot, judge, uid = unprivileged_slot
    mark = f"kvunp{os.getpid() % 100000:05d}"
    hostile = candidates.hostile(mark, 9, FAKE_KEY)[name]
    reply = _evaluate(slot, judge, uid, hostile)
    if expected is None:
        assert reply["ok"], reply
        assert reply["result"]["f"] == pytest.approx(candidates.HONEST_SCORE)
    else:
        assert not reply["ok"] and expected in reply["error"], reply
    follower = _evaluate(slot, judge, uid, candidates.follower(mark))
    assert follower["ok"] and follower["result"]["f"] == pytest.approx(candidates.HONEST_SCORE), follower
    assert slot.zygote.alive, "the candidate reached the zygote"
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            assert Path(f"/proc/{pid}/comm").read_text().strip() != mark, "an orphan survived"
