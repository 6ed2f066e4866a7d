"""Sandbox "none" as root: what a slot's uid leaves in world-writable folders is swept after each candidate
and counts against its disk quota (slot_uids.SHARED_TMP). A candidate may write wherever the host lets every
user write, not only at the top of /tmp: /run/lock (world-writable on Debian and Ubuntu, often on the root
disk), and the world-writable folders inside /tmp that other software makes (/tmp/.X11-unix, /tmp/.ICE-unix)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kubevolve.loop.engineer.slot_uids import remove_files_of_uid, uid_entries

SLOT_UID = 62011  # a uid no process and no file on the test machine uses


def write_as(uid: int, paths: list[Path]) -> None:
    """Write `paths` from a forked child running as `uid`, as a candidate would."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for path in paths:
                path.write_bytes(b"left for the next candidate")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the candidate could not write"


@pytest.mark.skipif(os.geteuid() != 0, reason="slot uids exist only as root")
def test_files_a_slot_uid_leaves_anywhere_world_writable_are_found_and_swept():
    shared = Path(f"/tmp/.kubevolve-adv-unix-{os.getpid()}")  # like /tmp/.X11-unix: root's, mode 1777
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o1777)
    inside = shared / "leftover"
    paths = [inside]
    if Path("/run/lock").is_dir() and os.stat("/run/lock").st_mode & 0o002:
        paths.append(Path(f"/run/lock/kubevolve-adv-{os.getpid()}"))
    try:
        write_as(SLOT_UID, paths)
        assert all(p.exists() for p in paths)
        found = set(uid_entries(SLOT_UID))
        assert {str(p) for p in paths} <= found, f"the quota does not see {sorted(map(str, paths))}"
        remove_files_of_uid(SLOT_UID)
        assert [str(p) for p in paths if p.exists()] == [], "left for the next candidate"
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        for path in paths[1:]:
            path.unlink(missing_ok=True)
