"""The pod layout's disk quota: the judge, one non-root uid, measures the `sandbox` volume the candidate's
container, another uid, writes. A walk of the folder (disk_quota.disk_usage) counts only what the judge's uid
can read, so a candidate's folder of mode 0700 hid its files; the volume is a memory-backed emptyDir
(jobs.py), a tmpfs of its own, whose counters (disk_quota.tmpfs_usage) include every file on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from kubevolve.loop.engineer.disk_quota import disk_usage, tmpfs_usage

JUDGE_UID, CANDIDATE_UID, FS_GROUP = 61001, 61002, 61001  # as in a pod: runAsUser = fsGroup for the judge
MIB = 1 << 20


def as_uid(uid: int, work: Callable[[], object]) -> object:
    """`work()` in a forked child running as `uid` with the pod's fsGroup as a supplementary group."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            os.setgroups([FS_GROUP])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as fh:
        out = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child as uid {uid} failed"
    return json.loads(out)


def write_hidden(folder: Path) -> None:
    folder.mkdir(mode=0o700)
    for i in range(8):
        (folder / str(i)).write_bytes(os.urandom(MIB))


def hide_and_hold(folder: Path, started: int, release: int) -> None:
    """Eight hidden MiB, and four more in a file deleted but still open; waits for `release` before closing it."""
    write_hidden(folder)
    with open(folder.parent / "held", "wb") as held:
        held.write(os.urandom(4 * MIB))
        held.flush()
        os.unlink(folder.parent / "held")
        os.write(started, b"x")
        os.read(release, 1)


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to mount a tmpfs and act as two uids, as a pod's two containers"
)


@pytest.fixture
def sandbox_volume():
    """A tmpfs as the kubelet makes a memory-backed emptyDir: world-writable, group fsGroup."""
    top = Path(tempfile.mkdtemp(prefix="kubevolve-pod-quota-"))  # pytest's tmp_path is root's alone
    sandbox = top / "sandbox"
    sandbox.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(sandbox)], check=True)
    try:
        os.chown(sandbox, 0, FS_GROUP)
        os.chmod(sandbox, 0o2777)
        os.chmod(top, 0o755)
        yield sandbox
    finally:
        subprocess.run(["umount", str(sandbox)], check=True)
        shutil.rmtree(top)


@needs_root
def test_the_judge_counts_files_the_candidate_hides_and_holds_open(sandbox_volume):
    started_r, started_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the candidate
        code = 1
        try:
            os.setgroups([FS_GROUP])
            os.setgid(CANDIDATE_UID)
            os.setuid(CANDIDATE_UID)
            hide_and_hold(sandbox_volume / "hidden", started_w, release_r)
            code = 0
        finally:
            os._exit(code)
    try:
        assert os.read(started_r, 1) == b"x"
        walked = as_uid(JUDGE_UID, lambda: disk_usage([str(sandbox_volume)]))
        counted = as_uid(JUDGE_UID, lambda: tmpfs_usage(str(sandbox_volume)))
        # the walk misses all twelve MiB (the folder is unreadable, the held file has no name)...
        assert walked[0] < MIB, walked  # type: ignore[index]
        # ...the filesystem's counters do not
        assert counted is not None and counted[0] >= 12 * MIB, counted  # type: ignore[index]
    finally:
        os.write(release_w, b"x")
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@needs_root
def test_the_kernel_bounds_the_volume_at_its_size(sandbox_volume):
    def fill() -> str:
        try:
            (sandbox_volume / "big").write_bytes(b"\0" * (40 * MIB))
        except OSError as err:
            return err.strerror or str(err)
        return "written"

    assert as_uid(CANDIDATE_UID, fill) == "No space left on device"


def test_a_folder_that_is_not_a_tmpfs_of_its_own_is_walked(tmp_path):
    """A plain folder (an emptyDir on the node's disk, or sandbox "none" on a laptop) has no counters of its
    own to read: statvfs would count the whole disk, so the judge walks it instead."""
    assert tmpfs_usage(str(tmp_path)) is None
