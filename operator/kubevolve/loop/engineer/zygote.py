"""The untrusted side of a slot: a warm process that forks one fresh, confined process per candidate.

Started once per slot (inside bubblewrap, or plainly with sandbox "none"), it imports the task's runner
(`run.py`: the code that runs a candidate and turns what it does into data) and whatever that imports (numpy,
torch), but never the task's judge: nothing the judge holds is in this address space, so nothing a candidate
forked from it can find. Forking it costs about a millisecond where a fresh interpreter costs 30-60 ms.

For each candidate the judge sends `spawn` with three descriptors (requests in, replies out, log out). The
zygote forks; the child confines itself (confine.py) and only then loads the candidate's program and serves
the judge's requests with `run(program, request)`. Confinement per mode:
- bwrap: the candidate is pid 2 of a new pid namespace whose init only waits (kill(-1) reaches only the
  candidate's own processes; killing the init ends them all), with its own mount, IPC and network namespace,
  a fresh size-limited tmpfs on /tmp (its scratch, also on /dev/shm) and its own /proc. As root the zygote
  forks it straight into the new namespace; otherwise a forked keeper first enters a user namespace of its
  own, the only place an unprivileged process may create the others (Spawner). Its network namespace holds
  only a loopback device, up for a stage with `network: ranks` (its ranks meet there; nothing else, not the
  host's loopback nor another candidate's, is in it), down otherwise.
- none: the candidate is forked directly into its own session, in a fresh scratch folder the judge made;
  the judge sweeps what it leaves (see judge.py). No namespace bounds its network, so `network: ranks` is
  refused here (the pool refuses such a run before it starts), except in the pod layout, where the pod's
  NetworkPolicy is the bound.
In both, when we are root the candidate becomes the slot's own unprivileged uid; it keeps no capability, no
descriptor but the three, no way to gain privileges, and dies with its parent. Its seccomp filter refuses
io_uring, foreign ABIs and, unless the stage says `network: ranks`, internet sockets.

Control protocol (a SOCK_SEQPACKET socket whose fd is the last argument, JSON datagrams): the zygote sends
`ready`; the judge sends `spawn` (an id, the limits, and three descriptors by SCM_RIGHTS) and `kill` (an id);
the zygote answers `spawned` and, when the process ends, `exit` with its id and wait status.

In a Kubernetes evaluation pod the zygote is the candidate container's own process (`--connect SOCKET`, the
pod layout, docs/kubernetes.md): the judge runs in another container, as another uid, and listens on a Unix
socket in a volume the two containers share. The zygote connects (once: the judge accepts one connection,
made before any candidate code exists), is told which runner to load, and serves the same protocol; the
descriptors it receives cross the containers as they cross processes. It is the container's pid 1, so no
candidate can kill it (the kernel drops signals a namespace's init has not asked for), and every process a
candidate leaves becomes its child. It removes each candidate's scratch itself when the candidate exits: the
judge, another uid, cannot delete what the candidate made there.
"""

from __future__ import annotations

import array
import contextlib
import importlib.util
import json
import os
import select
import shutil
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubevolve.loop.engineer import confine
from kubevolve.loop.engineer.worker import describe_import_error, errno_of
from kubevolve.sdk import channel
from kubevolve.sdk.evaluator_kit import load_program

REQUEST_FD, REPLY_FD = 3, 4  # in the candidate, after keep_only_fds
RANKS = "ranks"  # a job's `network` (a stage's, core.task.StageSpec) that lets its processes meet over TCP
SETUP_FAILED = 121  # the exit status of a candidate whose confinement could not be set up
SCRATCH = "/tmp"  # bwrap mode: the per-candidate tmpfs, also seen at /dev/shm
MAX_CONTROL = 1 << 16
CONNECT_TIMEOUT = 600.0  # pod layout: the judge's container loads the task (torch, ...) before it listens
CONNECT_POLL = 0.05
JUDGE_GONE = ".gone"  # pod layout: beside the socket, the judge's note that it will not listen (any more)
# imported once here so that a candidate which has dropped to a uid that cannot read the interpreter's
# folder (a root-owned install, sandbox "none") still finds the modules programs commonly use
PRELOAD = [
    "abc",
    "array",
    "bisect",
    "cmath",
    "collections",
    "contextlib",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "io",
    "itertools",
    "json",
    "math",
    "numbers",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "threading",
    "time",
    "traceback",
    "typing",
    "warnings",
]


def _load_runner(path: str, task_root: str) -> Any:
    sys.path.insert(0, task_root)
    spec = importlib.util.spec_from_file_location("kubevolve_task_runner", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the runner {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise ImportError(f"{path} defines no function run(program, request)")
    return module


# --- in the candidate's process -----------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _failure(err: BaseException) -> dict[str, Any]:
    """The reply for what the program (or run) raised: its text, classes and errno, from which the engine
    tells a limit from a bug (pool.reply_failure)."""
    return {
        "ok": False,
        "error": f"{type(err).__name__}: {err}"[:2000],
        "exception_classes": [cls.__name__ for cls in type(err).__mro__],
        "errno": errno_of(err),
    }


def _reply(value: Any) -> None:
    try:
        data = channel.encode(value)
    except (TypeError, ValueError) as err:
        traceback.print_exc()
        data = channel.encode(_failure(err))
    _write_all(REPLY_FD, data)


def serve(runner: Any) -> None:
    """Load the program the judge sends first, then answer each request with runner.run(program, request),
    until the judge closes the channel."""
    reader = channel.Reader()
    program = None
    while True:
        data = os.read(REQUEST_FD, 1 << 20)
        if not data:
            return
        for message in reader.feed(data):
            try:
                if program is None:
                    path = Path(message["name"]).name
                    Path(path).write_text(message["program"])
                    program = load_program(os.path.abspath(path), defined=message["required"])
                    value: Any = {"ok": True, "value": None}
                else:
                    value = {"ok": True, "value": runner.run(program, message)}
            except BaseException as err:  # the candidate's failure, reported as data
                traceback.print_exc()
                value = _failure(err)
            sys.stdout.flush()
            sys.stderr.flush()
            _reply(value)


def _become_candidate(job: dict[str, Any], fds: list[int], parent: int) -> None:
    """Everything between fork and the candidate's first line, in an order that matters: descriptors first
    (nothing else leaks), then limits, then the user (which clears the death signal, so that comes after)."""
    null = os.open(os.devnull, os.O_RDONLY)
    confine.keep_only_fds({0: null, 1: fds[2], 2: fds[2], REQUEST_FD: fds[0], REPLY_FD: fds[1]})
    scratch = job["scratch"]
    os.chdir(scratch)
    os.environ.update(TMPDIR=scratch, HOME=scratch)
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != scratch]
    confine.set_limits(job)
    if job.get("uid") is not None:
        confine.become(job["uid"], job["uid"])
    elif job["mode"] == "bwrap":
        confine.drop_capabilities()  # what the user namespace granted
    confine.no_new_privileges()
    confine.restrict_syscalls(internet=job.get("network") == RANKS)
    confine.die_with_parent(parent)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


def _run_candidate(runner: Any, job: dict[str, Any], fds: list[int], parent: int) -> None:
    """In the candidate's process: confine, serve, exit. Never returns."""
    status = 0
    try:
        _become_candidate(job, fds, parent)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.write(2, f"sandbox setup failed: {type(err).__name__}: {err}\n".encode())
        os._exit(SETUP_FAILED)
    try:
        serve(runner)
    except BaseException:
        status = 1
        with contextlib.suppress(BaseException):  # it may have closed stderr too
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
    os._exit(status)


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
    _run_candidate(runner, dict(job, scratch=SCRATCH), fds, 0)  # its parent is outside its namespace


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


# --- the zygote ---------------------------------------------------------------------------------------------


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


def _receive(control: socket.socket) -> tuple[dict[str, Any], list[int]]:
    fds = array.array("i")
    try:
        data, ancillary, _, _ = control.recvmsg(MAX_CONTROL, socket.CMSG_SPACE(16 * fds.itemsize))
    except ConnectionResetError:  # the judge exited with our replies unread: it is gone all the same
        raise EOFError("the judge closed the control socket") from None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        raise EOFError("the judge closed the control socket")
    return json.loads(data), list(fds)


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
                _run_candidate(self.runner, job, fds, zygote)
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


def _children() -> list[int]:
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN
        found = []
        for entry in os.listdir("/proc"):
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{entry}/stat") as fh:
                if entry.isdigit() and int(fh.read().rsplit(")", 1)[1].split()[1]) == me:
                    found.append(int(entry))
        return found


def _kill_descendants() -> None:
    """Sandbox "none": the zygote is a child subreaper, so whatever the candidate started, in any session,
    is our descendant and becomes our child when its parent dies; kill and reap until none is left."""
    while True:
        for child in _children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
        time.sleep(0.001)


def connect(path: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """Pod layout: the judge's socket, once it listens. Raises EOFError if the judge leaves its note that it
    never will (it failed before), TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if os.path.exists(path + JUDGE_GONE):
            raise EOFError("the judge's container ended without listening for the candidate's")
        control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            control.connect(path)
            return control
        except (FileNotFoundError, ConnectionRefusedError):
            control.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no judge listened at {path} within {timeout:g}s")
        time.sleep(CONNECT_POLL)


def _load_message(control: socket.socket) -> tuple[str, str, str]:
    """Pod layout: the judge's first message names the runner and the task root (the same paths in both
    containers: they run one image)."""
    message, fds = _receive(control)
    for fd in fds:
        os.close(fd)
    runner, task_root = message.get("runner"), message.get("task_root")
    if message.get("op") != "load" or not isinstance(runner, str) or not isinstance(task_root, str):
        raise EOFError(f"the judge sent no runner to load: {str(message)[:200]}")
    return runner, task_root, "none"


def write_identity() -> None:
    """nss_wrapper's passwd and group files, where the container's environment names them (NSS_WRAPPER_PASSWD
    and NSS_WRAPPER_GROUP, with LD_PRELOAD=libnss_wrapper.so: a TrainJob launcher's candidate, trainjob.py):
    the image's entries and one for this uid. ssh, which mpirun starts the ranks with, exits when its uid has
    no passwd entry, and a candidate's uid is in no image's /etc/passwd. Written before any candidate exists;
    a candidate may rewrite them, but they tell only its own processes, and the judge reads neither."""
    passwd, group = os.environ.get("NSS_WRAPPER_PASSWD"), os.environ.get("NSS_WRAPPER_GROUP")
    if not passwd or not group:
        return
    uid, gid = os.getuid(), os.getgid()
    home = os.environ.get("HOME") or "/"
    mine = (f"candidate:x:{uid}:{gid}:kubevolve candidate:{home}:/bin/sh", f"candidate:x:{gid}:")
    for path, system, entry in zip((passwd, group), ("/etc/passwd", "/etc/group"), mine, strict=True):
        try:
            theirs = [line for line in Path(system).read_text().splitlines() if line.strip()]
        except OSError:
            theirs = []
        taken = {line.split(":")[2] for line in theirs if line.count(":") >= 3}
        lines = theirs + ([entry] if entry.split(":")[2] not in taken else [])
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text("".join(line + "\n" for line in lines))
        except OSError as err:  # the candidate still runs; only what needs a user name (ssh) will fail
            print(f"kubevolve zygote: cannot write {path}: {err}", file=sys.stderr)


def main(argv: list[str]) -> int:
    pod = len(argv) == 3 and argv[1] == "--connect"
    if pod:  # the container's pid 1: a handler would let a candidate's SIGINT through the init protection
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        write_identity()
        try:
            control = connect(argv[2])
            runner_path, task_root, mode = _load_message(control)
        except (EOFError, TimeoutError, OSError) as err:
            print(f"kubevolve zygote: {err}", file=sys.stderr)
            return 1
    else:
        runner_path, task_root, mode, control_fd = argv[1], argv[2], argv[3], int(argv[4])
        control = socket.socket(fileno=control_fd)
    os.dup2(2, 1)  # stray prints of the runner's import go to stderr
    confine.not_dumpable()
    confine.prctl(confine.PR_SET_CHILD_SUBREAPER, 1)
    with contextlib.suppress(OSError):
        confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        for name in PRELOAD:
            __import__(name)
        runner = _load_runner(runner_path, task_root)
    except BaseException as err:
        message = describe_import_error(err, runner_path, task_root, what="the runner")
        _send(control, {"op": "fatal", "error": message[:4000]})
        return 2
    _send(control, {"op": "ready", "pid": os.getpid()})
    serve_judge(control, runner, mode, pod=pod)
    return 0


def _report(ident: Any, status: int, mode: str) -> dict[str, Any]:
    if mode == "bwrap" and os.WIFEXITED(status) and os.WEXITSTATUS(status) >= 128:  # a keeper's encoding
        return {"op": "exit", "id": ident, "signal": os.WEXITSTATUS(status) - 128, "code": None}
    if os.WIFSIGNALED(status):
        return {"op": "exit", "id": ident, "signal": os.WTERMSIG(status), "code": None}
    return {"op": "exit", "id": ident, "signal": None, "code": os.WEXITSTATUS(status)}


def _own_tasks() -> int:
    """Threads of this process: they count against its uid's process limit, which candidates share (pod)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _kill_all(children: dict[int, Spawned]) -> None:
    for child in children.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.kill_pid, child.kill_signal)


def serve_judge(control: socket.socket, runner: Any, mode: str, *, pod: bool = False) -> None:
    """Spawn, kill and report candidate processes (each known by the judge's id) until the judge goes.
    Several may live at once (one running, one waiting for its program); each exit is reported once.
    `pod`: the judge is another container's uid, so a candidate's scratch is removed here, and the process
    limit (RLIMIT_NPROC counts the whole uid, ours too) includes this process's threads."""
    spawner = Spawner(runner, mode, pod=pod)
    children: dict[int, Spawned] = {}  # pidfd -> the candidate
    inits: dict[int, int] = {}  # pidfd -> pid of a killed namespace's init, reaped once its namespace is gone
    while True:
        waitables: list[socket.socket | int] = [control, *children, *inits]
        ready, _, _ = select.select(waitables, [], [])
        for pidfd in [fd for fd in ready if fd in inits]:
            os.waitpid(inits.pop(pidfd), 0)
            os.close(pidfd)
        for pidfd in [fd for fd in ready if fd in children]:
            child = children.pop(pidfd)
            os.close(pidfd)
            _, status = os.waitpid(child.pid, 0)
            if child.init is not None:  # the namespace may hold what it started: end it, without waiting
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.init, signal.SIGKILL)
                inits[os.pidfd_open(child.init)] = child.init  # (the kernel may take a while to tear it down)
            if mode == "none" and not children:
                _kill_descendants()  # whatever it started, in any session (we are its subreaper)
            if pod and child.scratch:
                shutil.rmtree(child.scratch, ignore_errors=True)
            try:
                _send(control, _report(child.ident, status, mode))
            except (BrokenPipeError, ConnectionResetError):  # the judge is gone: as EOF below
                _kill_all(children)
                return
        if control not in ready:
            continue
        try:
            message, fds = _receive(control)
        except EOFError:
            _kill_all(children)
            return
        op, ident = message.get("op"), message.get("id")
        if op == "spawn" and len(fds) == 3:
            job = message["job"]
            if pod:
                job = dict(job, max_processes=job["max_processes"] + _own_tasks())
            try:
                child = spawner.spawn(ident, job, fds)
            except OSError as err:
                _send(
                    control,
                    {"op": "exit", "id": ident, "signal": None, "code": SETUP_FAILED, "error": str(err)},
                )
                continue
            children[os.pidfd_open(child.pid)] = child
            _send(control, {"op": "spawned", "id": ident, "pid": child.pid})
            continue
        for fd in fds:
            os.close(fd)
        if op == "kill":  # killing its init (or its keeper, which kills the init) ends its namespace
            for child in children.values():
                if child.ident == ident:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.kill_pid, child.kill_signal)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
