"""How the zygote forks a candidate into its confinement, per sandbox mode: the fork itself (Spawner) and, with
bubblewrap, the namespaces each candidate gets (a pid namespace with an init that only waits, mount, IPC and
network namespaces, a size-limited tmpfs for its scratch, its own /proc), made by the zygote as root or by a
keeper in a user namespace of its own otherwise. What the candidate then runs is candidate_main.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from dataclasses import dataclass
from typing import Any

from kubevolve.loop.engineer import confine
from kubevolve.loop.engineer.candidate_main import RANKS, SETUP_FAILED, run_candidate

SCRATCH = "/tmp"  # bwrap mode: the per-candidate tmpfs, also seen at /dev/shm


def _encoded(status: int) -> int:
    """A wait status as an exit code: 128 + the signal that killed it, else its exit code (at most 127)."""
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else min(os.WEXITSTATUS(status), 127)


def _enter_scratch(job: dict[str, Any], new_mount_ns: bool) -> None:
    """In the candidate (pid 2 of its namespace, still privileged there): its own mount and IPC namespace
    (unless its keeper made them), its own network namespace (loopback up for `network: ranks`), a fresh
    size-limited tmpfs on /tmp (its scratch), the same tmpfs on /dev/shm, and a /proc of its own pid
    namespace. The network namespace is made even for an isolated stage: candidates of one slot share the
    zygote's otherwise, and abstract Unix sockets, which the seccomp filter allows, live in it."""
    flags = confine.CLONE_NEWNET | (confine.CLONE_NEWNS | confine.CLONE_NEWIPC if new_mount_ns else 0)
    confine.unshare(flags)
    if job.get("network") == RANKS:
        confine.loopback_up()
    confine.private_mounts()
    confine.scratch_tmpfs(SCRATCH, job["disk_bytes"])
    shm = os.path.join(SCRATCH, ".shm")
    os.mkdir(shm)
    os.chmod(shm, 0o1777)
    confine.bind(shm, "/dev/shm")
    confine.mount_proc()


def _start_init(init_program: str) -> int:
    """pid 1 of a fresh pid namespace: a program that only waits (vfork and exec: no copy of our memory).
    The candidate is not pid 1 itself, because the kernel ignores default-action signals sent to a
    namespace's init, and SIGXCPU or a candidate's own SIGTERM must act on it as they would anywhere.
    Killing it kills everything in the namespace."""
    return os.posix_spawn(init_program, ["kubevolve-candidate-init", "infinity"], {})


def _candidate_in(runner: Any, job: dict[str, Any], fds: list[int], new_mount_ns: bool) -> None:
    """The forked candidate, pid 2 of its namespace: scratch and /proc, then confinement. Never returns."""
    try:
        _enter_scratch(job, new_mount_ns)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.write(fds[2], f"sandbox setup failed: {type(err).__name__}: {err}\n".encode())
        os._exit(SETUP_FAILED)
    run_candidate(runner, dict(job, scratch=SCRATCH), fds, 0)  # its parent is outside its namespace


def _keeper(runner: Any, job: dict[str, Any], fds: list[int], init_program: str) -> None:
    """bwrap without root, in the forked child: a user namespace of its own (where it may make the others),
    new pid, mount and IPC namespaces, their init, the candidate as pid 2. Exits with the candidate's status;
    SIGTERM from the zygote (or the zygote's death) kills the init, and with it the whole namespace."""
    try:
        uid, gid = os.getuid(), os.getgid()
        confine.unshare(
            confine.CLONE_NEWUSER | confine.CLONE_NEWPID | confine.CLONE_NEWNS | confine.CLONE_NEWIPC
        )
        confine.prctl(confine.PR_SET_DUMPABLE, 1)  # the zygote is not; a process that is not may not map ids
        confine.map_own_ids(uid, gid)
        init = _start_init(init_program)
        candidate = os.fork()
        if candidate == 0:
            _candidate_in(runner, job, fds, new_mount_ns=False)
        for fd in fds:
            os.close(fd)

        def stop(signum: int, frame: Any) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)

        signal.signal(signal.SIGTERM, stop)
        confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGTERM)
        _, status = os.waitpid(candidate, 0)
        stop(0, None)
        os.waitpid(init, 0)
        os._exit(_encoded(status))
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.write(fds[2], f"sandbox setup failed: {type(err).__name__}: {err}\n".encode())
        os._exit(SETUP_FAILED)


@dataclass
class Spawned:
    """A candidate as the zygote keeps it: the child whose exit it reports, how to kill it, what to reap."""

    ident: Any
    pid: int  # the candidate (none; bwrap as root) or its keeper (bwrap otherwise)
    kill_pid: int  # killing this ends the candidate and all it started
    kill_signal: int
    init: int | None = None  # bwrap as root: the namespace's init, our child too
    scratch: str | None = None  # sandbox "none": its scratch folder, which a pod's zygote removes after it


class Spawner:
    """Forks candidate processes into their confinement, per mode, with as few forks of this (large)
    process as the kernel allows: a fork of a Python process with numpy or torch loaded costs milliseconds.

    - none: one fork, the candidate.
    - bwrap as root: we may create pid namespaces ourselves, so the candidate is forked straight into a new
      one (unshare, then setns back), after an init that is spawned, not forked: one fork.
    - bwrap otherwise: only a process in a user namespace of its own may create the others, and entering
      one is for good, so a keeper is forked to do it: two forks.

    `pod`: the zygote of a pod's candidate container, where the NetworkPolicy bounds `network: ranks`."""

    def __init__(self, runner: Any, mode: str, *, pod: bool = False):
        self.runner, self.mode, self.pod = runner, mode, pod
        self.root = os.geteuid() == 0
        self.init_program = shutil.which("sleep") or "/bin/sleep"
        self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY) if mode == "bwrap" and self.root else None

    def spawn(self, ident: Any, job: dict[str, Any], fds: list[int]) -> Spawned:
        for fd in fds:  # received without close-on-exec: the init we exec must not hold them
            os.set_inheritable(fd, False)
        try:
            if self.mode == "none":
                if job.get("network") == RANKS and not self.pod:
                    raise OSError(
                        "network 'ranks' needs a network namespace per candidate (sandbox 'bwrap') or the "
                        "pod layout's NetworkPolicy; sandbox 'none' would give the candidate the host's network"
                    )
                return self._plain(ident, job, fds)
            if self.root:
                return self._in_new_pid_namespace(ident, job, fds)
            return self._with_keeper(ident, job, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _fork(self) -> int:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return pid

    def _plain(self, ident: Any, job: dict[str, Any], fds: list[int]) -> Spawned:
        zygote = os.getpid()
        pid = self._fork()
        if pid == 0:
            try:
                os.setsid()
                run_candidate(self.runner, job, fds, zygote)
            finally:
                os._exit(SETUP_FAILED)
        return Spawned(ident, pid, pid, signal.SIGKILL, scratch=job.get("scratch"))

    def _in_new_pid_namespace(self, ident: Any, job: dict[str, Any], fds: list[int]) -> Spawned:
        assert self.own_pid_ns is not None
        confine.unshare(confine.CLONE_NEWPID)  # for our next children only
        try:
            init = _start_init(self.init_program)
            pid = self._fork()
            if pid == 0:
                try:
                    os.setsid()
                    _candidate_in(self.runner, job, fds, new_mount_ns=True)
                finally:
                    os._exit(SETUP_FAILED)
        finally:
            confine.setns(self.own_pid_ns, confine.CLONE_NEWPID)
        return Spawned(ident, pid, init, signal.SIGKILL, init)

    def _with_keeper(self, ident: Any, job: dict[str, Any], fds: list[int]) -> Spawned:
        pid = self._fork()
        if pid == 0:
            try:
                os.setsid()
                _keeper(self.runner, job, fds, self.init_program)
            finally:
                os._exit(SETUP_FAILED)
        return Spawned(ident, pid, pid, signal.SIGTERM)
