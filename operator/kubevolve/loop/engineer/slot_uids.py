"""One unprivileged uid per evaluation slot, when the engine runs as root, that nothing else on the machine uses.

A candidate that runs as its slot's own uid cannot signal, trace or read the memory of the judge, the runner,
another slot's candidate or anyone else's process, and everything it leaves (processes in a new session,
files in /tmp) can be found by that uid and removed. For that the uid must be ours alone: it is taken from a
high range no distribution assigns, skipped when /etc/passwd names it or any process runs as it, and held
for the pool's lifetime with an exclusive lock in /run/kubevolve/uids, so two runs on one machine never
share one (the lock goes when the process that holds it dies, however it dies).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import shutil
import signal
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kubevolve.errors import KubevolveError
from kubevolve.loop.engineer import confine

UID_BASE = int(os.environ.get("KUBEVOLVE_SANDBOX_UID_BASE", "2140000000"))
UID_RANGE = 4096
LOCK_DIR = Path("/run/kubevolve/uids")
SCRATCH_DIR = Path("/var/tmp/kubevolve-slots")  # sandbox "none": traversable by the slot uid, unlike a home
SHARED_TMP = (
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/run/lock",  # world-writable on Debian and Ubuntu (/var/lock links to it)
    "/dev/mqueue",
)  # world-writable: where a candidate can leave files outside scratch (uid_entries looks one level deeper)


class NoFreeUid(KubevolveError, RuntimeError):
    pass


class SweepFailed(KubevolveError, RuntimeError):
    """A process of a slot's uid survived SIGKILL: the slot cannot promise a clean start."""


_SWEEPING = threading.Lock()  # two helpers of one uid would kill each other


def _uids_of(pid: str) -> set[int]:
    """Real, effective, saved and filesystem uid (/proc/PID's owner is root when a process is not dumpable)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Uid:"):
                    return {int(v) for v in line.split()[1:]}
    except OSError:
        pass
    return set()


def processes_of_uid(uid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and uid in _uids_of(p)]


def held_deleted_bytes(uid: int) -> int:
    """Disk `uid`'s processes hold in files they deleted and keep open: no folder walk finds a file without
    a name, and its space is freed only when the last descriptor closes (a quota must count it)."""
    total, seen = 0, set()
    for pid in processes_of_uid(uid):
        folder = f"/proc/{pid}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(folder):
                with contextlib.suppress(OSError):
                    path = f"{folder}/{fd}"
                    if not os.readlink(path).endswith(" (deleted)"):
                        continue
                    info = os.stat(path)  # the open file itself
                    if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
                        seen.add((info.st_dev, info.st_ino))
                        total += info.st_blocks * 512
    return total


def _alone() -> bool:
    """Whether no other process of our uid exists: with RLIMIT_NPROC at 2 a fork succeeds only while we are
    the uid's one process (the kernel counts a process until it is reaped, zombies too). O(1), unlike a
    scan of /proc."""
    try:
        pid = os.fork()
    except BlockingIOError:
        return False
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return True


def kill_uid(uid: int, attempts: int = 2000) -> None:
    """Kill every process of `uid`, whatever session it started: a helper becomes `uid` and sends SIGKILL to
    every process it may signal (kill -1), which is exactly that uid's, until it is the uid's only process.
    Safe only because the uid is ours alone (allocate)."""
    with _SWEEPING:
        _kill_uid(uid, attempts)


def _kill_uid(uid: int, attempts: int) -> None:
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            confine.become(uid, uid)
            resource.setrlimit(resource.RLIMIT_NPROC, (2, 2))
            for attempt in range(attempts):
                if attempt:
                    os.kill(-1, signal.SIGKILL)
                if _alone():
                    status = 0
                    break
                time.sleep(0.001)
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SweepFailed(f"processes of sandbox uid {uid} survive SIGKILL: {processes_of_uid(uid)[:10]}")


def uid_entries(uid: int) -> list[str]:
    """What `uid` owns at the top of the world-writable folders, and inside the world-writable folders of
    others found there (/tmp/.X11-unix, /tmp/.ICE-unix: any user may write in them too)."""
    found: list[str] = []

    def scan(folder: str, deeper: bool) -> None:
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):  # one that vanishes must not hide the others
                    info = entry.stat(follow_symlinks=False)
                    if info.st_uid == uid:
                        found.append(entry.path)
                    elif deeper and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_IWOTH:
                        scan(entry.path, deeper=False)

    for folder in SHARED_TMP:
        scan(folder, deeper=True)
    return found


def remove_files_of_uid(uid: int) -> list[str]:
    """Delete what `uid` left in the world-writable folders (uid_entries); return the paths."""
    removed = []
    for path in uid_entries(uid):
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
            removed.append(path)
    return removed


def _named_uids() -> set[int]:
    try:
        lines = Path("/etc/passwd").read_text().splitlines()
    except OSError:
        return set()
    return {int(f[2]) for f in (line.split(":") for line in lines) if len(f) > 2 and f[2].isdigit()}


@dataclass
class SlotUid:
    uid: int
    lock_fd: int

    def scratch_root(self) -> Path:
        """Sandbox "none": a folder for this uid's candidates that it can reach (root-owned, 0711 on the way)."""
        SCRATCH_DIR.mkdir(mode=0o711, exist_ok=True)
        os.chmod(SCRATCH_DIR, 0o711)
        root = SCRATCH_DIR / str(self.uid)
        root.mkdir(mode=0o711, exist_ok=True)
        return root

    def release(self) -> None:
        os.close(self.lock_fd)


def allocate(count: int) -> list[SlotUid]:
    """`count` uids that are ours alone until released (root only)."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    named = _named_uids()
    taken: list[SlotUid] = []
    for uid in range(UID_BASE, UID_BASE + UID_RANGE):
        if len(taken) == count:
            break
        if uid in named:
            continue
        fd = os.open(LOCK_DIR / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if processes_of_uid(uid):  # someone else's, or a leftover: not ours to kill
            os.close(fd)
            continue
        taken.append(SlotUid(uid, fd))
    if len(taken) == count:
        return taken
    for slot in taken:
        slot.release()
    raise NoFreeUid(f"no free sandbox uid in {UID_BASE}..{UID_BASE + UID_RANGE - 1} for {count} slots")
