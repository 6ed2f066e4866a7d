"""The Linux calls that confine one candidate process, each as small as the kernel allows.

Used by the zygote (spawner.py, candidate_main.py) between `fork()` and the first line of candidate code.
Python's `os` lacks unshare, mount, capset and prctl, so they go through libc with ctypes; every failure raises
OSError naming the call, and the zygote reports it as a sandbox failure, never as the candidate's.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import resource
import signal
import socket
import struct
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_CAPBSET_DROP = 1, 4, 22, 24
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, SECCOMP_MODE_FILTER = 36, 38, 2
CAP_LAST = 63  # drop every bounding-set bit the kernel may know; unknown ones fail with EINVAL, ignored
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# seccomp: (audit arch, socket, io_uring_setup, first number of a foreign ABI on the same arch) per machine
_SYSCALLS = {
    "x86_64": (0xC000003E, 41, 425, 0x40000000),  # x32 syscalls carry bit 30
    "aarch64": (0xC00000B7, 198, 425, 0xFFFFFFFF),
}
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
ENETUNREACH, EAFNOSUPPORT, EPERM = 101, 97, 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, kind: int) -> None:
    _check(_libc.setns(fd, kind), "setns")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {fstype or 'bind'} on {target}",
    )


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def map_own_ids(uid: int, gid: int) -> None:
    """In a fresh user namespace: be the same uid and gid as outside (an unprivileged process may map only
    itself), so files keep their owner and nothing maps to root."""
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{gid} {gid} 1")


def private_mounts() -> None:
    """Nothing this mount namespace mounts from now on propagates back to the namespace it came from."""
    mount("none", "/", None, MS_REC | MS_PRIVATE)


def scratch_tmpfs(target: str, size_bytes: int) -> None:
    """The candidate's only writable place: a fresh tmpfs with a size quota, never on disk; world-writable
    and sticky like any /tmp, so that what the set-up puts there stays the set-up's."""
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_bytes},mode=1777")


def bind(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND | MS_REC)


def mount_proc() -> None:
    """A /proc that shows only the processes of the current pid namespace (call in its first process)."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def become(uid: int, gid: int) -> None:
    """Root to an unprivileged user: no supplementary groups, real, effective and saved ids all changed, so
    no capability survives and there is no way back."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid):
        raise OSError(f"setresuid({uid}) did not take")


def drop_capabilities() -> None:
    """Empty the bounding set and the permitted, effective and inheritable sets (what a user namespace grants
    its first process), so the candidate cannot mount, unmount or change ids even inside its namespaces."""
    for cap in range(CAP_LAST + 1):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() not in (
            22,
            1,
        ):  # EINVAL/EPERM
            _check(-1, f"dropping capability {cap}")
    header = struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two empty __user_cap_data_struct
    _check(_libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(data)), "capset")


def no_new_privileges() -> None:
    """execve of a setuid program or one with file capabilities grants nothing from now on."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def die_with_parent(parent: int) -> None:
    """SIGKILL when the parent exits (set after any change of uid, which clears it); if the parent is
    already gone, exit now."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def not_dumpable() -> None:
    """Processes of the same uid cannot ptrace this one or read its memory or /proc/PID/environ."""
    prctl(PR_SET_DUMPABLE, 0)


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def restrict_syscalls(*, internet: bool = False) -> bool:
    """A seccomp filter: io_uring (which can open sockets on its own) and every syscall of a foreign ABI (i386
    or x32 on x86_64, which would bypass the numbers below) fail with EPERM; socket() of a family other than
    AF_UNIX, AF_NETLINK and the internet ones fails with EAFNOSUPPORT (a network namespace does not bound
    them all: AF_VSOCK reaches the hypervisor of a VM from any namespace, and the rest are kernel attack
    surface no candidate needs); unless `internet`, socket(AF_INET or AF_INET6) fails with ENETUNREACH.
    Without namespaces (sandbox "none") that refusal is what keeps a candidate off the network, loopback
    services included; `internet` (a stage's `network: ranks`) is for a candidate whose reach something else
    bounds: a network namespace of its own (bubblewrap) or the pod's NetworkPolicy. Returns False on a
    machine the filter does not know (it then adds nothing). Needs no privilege once no_new_privileges() is
    set."""
    known = _SYSCALLS.get(os.uname().machine)
    if known is None:
        return False
    arch, socket_nr, io_uring_nr, foreign = known
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, refused = 0x7FFF0000, 0x00050000 | EPERM
    unsupported, unreachable = 0x00050000 | EAFNOSUPPORT, 0x00050000 | ENETUNREACH
    program = [  # (code, jump if true, jump if false, k), jumps counted from the next instruction
        (ld, 0, 0, 4),  # 0 arch
        (jeq, 0, 12, arch),  # 1 -> 14 refused
        (ld, 0, 0, 0),  # 2 syscall number
        (jge, 10, 0, foreign),  # 3 -> 14 refused
        (jeq, 9, 0, io_uring_nr),  # 4 -> 14 refused
        (jeq, 0, 7, socket_nr),  # 5 -> 13 allow
        (ld, 0, 0, 16),  # 6 socket's first argument (low 32 bits): the address family
        (jeq, 5, 0, AF_UNIX),  # 7 -> 13 allow
        (jeq, 4, 0, AF_NETLINK),  # 8 -> 13 allow
        (jeq, 2, 0, AF_INET),  # 9 -> 12 internet
        (jeq, 1, 0, AF_INET6),  # 10 -> 12 internet
        (ret, 0, 0, unsupported),  # 11
        (ret, 0, 0, allow if internet else unreachable),  # 12 internet
        (ret, 0, 0, allow),  # 13
        (ret, 0, 0, refused),  # 14
    ]
    filters = (_SockFilter * len(program))(*(_SockFilter(*insn) for insn in program))
    fprog = _SockFprog(len(program), filters)
    _check(
        _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "installing seccomp"
    )
    return True


def loopback_up() -> None:
    """In a fresh network namespace (whose only device, `lo`, starts down): bring loopback up, so that the
    candidate's own processes can meet on 127.0.0.1 and ::1. Needs CAP_NET_ADMIN over the namespace."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # any socket carries interface ioctls
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def set_limits(limits: dict[str, Any]) -> None:
    """The stage's limits: CPU seconds, data segment, file size, processes; no core dumps."""
    cpu = int(limits["cpu_seconds"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if limits.get("memory_bytes"):
        resource.setrlimit(resource.RLIMIT_DATA, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"], limits["max_processes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def keep_only_fds(mapping: dict[int, int]) -> None:
    """Put each source fd at its target number and close every other descriptor: what the candidate holds is
    exactly the channel, its log and /dev/null on stdin."""
    staged = {
        target: os.dup(source) for target, source in mapping.items()
    }  # sources may collide with targets
    for target, temporary in staged.items():
        os.dup2(temporary, target, inheritable=True)
        os.close(temporary)
    top = max(mapping) + 1
    os.closerange(top, 1 << 20)
    for fd in range(top):
        if fd not in mapping:
            with contextlib.suppress(OSError):
                os.close(fd)
