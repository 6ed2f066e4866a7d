"""Sandbox "none": how much disk a candidate holds, where the kernel keeps no quota for it.

Without a mount namespace a candidate writes to a scratch folder of the host's disk and to the shared /tmp,
/var/tmp and /dev/shm, so the judge counts what it holds there (candidate_process.py watches the count and
kills the candidate past its quota). In the pod layout the volume the two containers share is a tmpfs of its
own, whose counters say what a walk cannot see.
"""

from __future__ import annotations

import contextlib
import os

from kubevolve.loop.engineer.slot_uids import held_deleted_bytes

QUOTA_POLL = 0.1
MAX_SCRATCH_ENTRIES = 100_000  # sandbox "none": more files than this counts as over quota


def disk_usage(roots: list[str], limit_entries: int = MAX_SCRATCH_ENTRIES) -> tuple[int, int]:
    """(bytes allocated, entries) under `roots`, stopping once `limit_entries` is passed."""
    total = entries = 0
    stack = list(roots)
    while stack and entries <= limit_entries:
        path = stack.pop()
        with contextlib.suppress(OSError), os.scandir(path) as it:
            for entry in it:
                entries += 1
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
    return total, entries


def tmpfs_usage(root: str) -> tuple[int, int] | None:
    """(bytes, inodes) in use on the tmpfs mounted at `root`, or None when no tmpfs is mounted exactly there.
    The pod layout's `sandbox` volume is a memory-backed emptyDir: a tmpfs of its own, whose counters include
    every file on it, those in folders the judge's uid cannot read and those deleted but still open, which a
    walk (disk_usage) cannot see."""
    target = os.path.realpath(root)
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            # id parent major:minor root mount-point options [optional...] - fstype source super-options
            if len(fields) > 4 and fields[4].replace("\\040", " ") == target and "-" in fields:
                fstype = fields[fields.index("-") + 1]
                if fstype == "tmpfs":
                    st = os.statvfs(target)
                    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_files - st.f_ffree
    return None


def candidate_usage(roots: list[str], shared_root: str | None, uid: int | None) -> tuple[int, int]:
    """(bytes, entries) a candidate holds: the counters of the pod layout's tmpfs at `shared_root` where there
    is one, else a walk of `roots` plus what `uid` holds in files deleted but still open."""
    counted = tmpfs_usage(shared_root) if shared_root is not None else None
    if counted is not None:
        return counted
    used, entries = disk_usage(roots)
    return used + (held_deleted_bytes(uid) if uid is not None else 0), entries
