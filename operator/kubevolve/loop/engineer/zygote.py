"""The untrusted side of a slot: a warm process that forks one fresh, confined process per candidate.

Started once per slot (inside bubblewrap, or plainly with sandbox "none"), it imports the task's runner
(`run.py`: the code that runs a candidate and turns what it does into data) and whatever that imports (numpy,
torch), but never the task's judge: nothing the judge holds is in this address space, so nothing a candidate
forked from it can find. Forking it costs about a millisecond where a fresh interpreter costs 30-60 ms.

For each candidate the judge sends `spawn` with three descriptors (requests in, replies out, log out). The
zygote forks (spawner.py); the child confines itself (confine.py) and only then loads the candidate's program
and serves the judge's requests with `run(program, request)` (candidate_main.py). Confinement per mode:
- bwrap: the candidate is pid 2 of a new pid namespace whose init only waits (kill(-1) reaches only the
  candidate's own processes; killing the init ends them all), with its own mount, IPC and network namespace,
  a fresh size-limited tmpfs on /tmp (its scratch, also on /dev/shm) and its own /proc. As root the zygote
  forks it straight into the new namespace; otherwise a forked keeper first enters a user namespace of its
  own, the only place an unprivileged process may create the others (Spawner). Its network namespace holds
  only a loopback device, up for a stage with `network: ranks` (its ranks meet there; nothing else, not the
  host's loopback nor another candidate's, is in it), down otherwise.
- none: the candidate is forked directly into its own session, in a fresh scratch folder the judge made;
  the judge sweeps what it leaves (judge_slot.py). No namespace bounds its network, so `network: ranks` is
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

This module is the zygote's main (`python -m kubevolve.loop.engineer.zygote`) and its control loop.
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
from pathlib import Path
from typing import Any

from kubevolve.loop.engineer import confine
from kubevolve.loop.engineer.candidate_main import SETUP_FAILED
from kubevolve.loop.engineer.spawner import Spawned, Spawner
from kubevolve.loop.engineer.worker import describe_import_error

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
