"""The untrusted side of a slot: a warm process that forks one fresh, confined process per candidate.

Started once per slot (inside bubblewrap, or plainly with sandbox "none"), it imports the task's runner
(`run.py`: the code that runs a candidate and turns what it does into data) and whatever that imports (numpy,
torch), but never the task's judge: nothing the judge holds is in this address space, so nothing a candidate
forked from it can find. Forking it costs about a millisecond where a fresh interpreter costs 30-60 ms.

For each candidate the judge sends `spawn` with three descriptors (requests in, replies out, log out). The
zygote forks; the child confines itself (confine.py) and only then loads the candidate's program and serves
the judge's requests with `run(program, request)`. Confinement per mode:
- bwrap: a "keeper" child enters a new pid, mount and IPC namespace (and a user namespace when we are not
  root), mounts a fresh size-limited tmpfs on /tmp (the candidate's scratch, also bound on /dev/shm) and forks
  the namespace's init, which forks the candidate: kill(-1) reaches only the candidate's own processes, and
  when it exits the init exits and the kernel kills everything it started. The keeper waits, kills the init
  on the judge's word, and exits with the candidate's status.
- none: the candidate is forked directly into its own session, in a fresh scratch folder the judge made;
  the judge sweeps what it leaves (see judge.py).
In both, when we are root the candidate becomes the slot's own unprivileged uid; it keeps no capability, no
descriptor but the three, no way to gain privileges, and dies with its parent.

Control protocol (a SOCK_SEQPACKET socket whose fd is the last argument, JSON datagrams): the zygote sends `ready`; the judge sends
`spawn` (with SCM_RIGHTS) and maybe `kill`; the zygote answers `spawned` then `exit` with the wait status.
"""

from __future__ import annotations

import array
import contextlib
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from kubevolve.loop.engineer import channel, confine
from kubevolve.sdk.evaluator_kit import load_program

REQUEST_FD, REPLY_FD = 3, 4  # in the candidate, after keep_only_fds
SETUP_FAILED = 121  # the exit status of a candidate whose confinement could not be set up
SCRATCH = "/tmp"  # bwrap mode: the per-candidate tmpfs, also seen at /dev/shm
MAX_CONTROL = 1 << 16
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
    errno = None
    seen: BaseException | None = err
    for _ in range(8):  # an OSError's errno, or that of the one it wraps (urllib keeps it in `reason`)
        if seen is None:
            break
        if isinstance(seen, OSError) and isinstance(seen.errno, int):
            errno = seen.errno
            break
        reason = getattr(seen, "reason", None)
        seen = reason if isinstance(reason, BaseException) else seen.__cause__ or seen.__context__
    return {
        "ok": False,
        "error": f"{type(err).__name__}: {err}"[:2000],
        "exception_classes": [cls.__name__ for cls in type(err).__mro__],
        "errno": errno,
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
    confine.deny_network()
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


def _init(runner: Any, job: dict[str, Any], fds: list[int]) -> None:
    """pid 1 of the candidate's namespace: a fresh /proc, then the candidate as pid 2, then reap whatever is
    orphaned until the candidate exits, and exit with its status (the kernel then kills every process left).
    The candidate is not pid 1 itself: the kernel ignores default-action signals sent to a namespace's init,
    and SIGXCPU, SIGXFSZ or a candidate's own SIGTERM must act on it as they would anywhere."""
    confine.mount_proc()
    candidate = os.fork()
    if candidate == 0:
        _run_candidate(runner, dict(job, scratch=SCRATCH), fds, 1)
    for fd in fds:
        os.close(fd)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == candidate:
            os._exit(_encoded(status))


def _keeper(runner: Any, job: dict[str, Any], fds: list[int]) -> None:
    """bwrap mode, in the forked child: new namespaces and scratch, and their init (_init). Exits with the
    candidate's status; SIGTERM from the zygote kills the init, and with it the whole namespace."""
    try:
        uid, gid = os.getuid(), os.getgid()
        flags = confine.CLONE_NEWPID | confine.CLONE_NEWNS | confine.CLONE_NEWIPC
        if os.geteuid() != 0:
            flags |= confine.CLONE_NEWUSER
        confine.unshare(flags)
        if flags & confine.CLONE_NEWUSER:
            confine.map_own_ids(uid, gid)
        confine.private_mounts()
        confine.scratch_tmpfs(SCRATCH, job["disk_bytes"])
        shm = os.path.join(SCRATCH, ".shm")
        os.mkdir(shm)
        os.chmod(shm, 0o1777)
        confine.bind(shm, "/dev/shm")
        init = os.fork()
        if init == 0:
            try:
                _init(runner, job, fds)
            except BaseException as err:
                with contextlib.suppress(OSError):
                    os.write(fds[2], f"sandbox setup failed: {type(err).__name__}: {err}\n".encode())
            os._exit(SETUP_FAILED)
        for fd in fds:
            os.close(fd)

        def stop(signum: int, frame: Any) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)

        signal.signal(signal.SIGTERM, stop)
        confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGTERM)
        _, status = os.waitpid(init, 0)  # the init's exit code is the candidate's, encoded already
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else _encoded(status))
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.write(fds[2], f"sandbox setup failed: {type(err).__name__}: {err}\n".encode())
        os._exit(SETUP_FAILED)


# --- the zygote ---------------------------------------------------------------------------------------------


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


def _receive(control: socket.socket) -> tuple[dict[str, Any], list[int]]:
    fds = array.array("i")
    data, ancillary, _, _ = control.recvmsg(MAX_CONTROL, socket.CMSG_SPACE(16 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        raise EOFError("the judge closed the control socket")
    return json.loads(data), list(fds)


def _spawn(runner: Any, job: dict[str, Any], fds: list[int]) -> int:
    zygote = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.setsid()
            if job["mode"] == "bwrap":
                _keeper(runner, job, fds)
            _run_candidate(runner, job, fds, zygote)
        finally:
            os._exit(SETUP_FAILED)
    for fd in fds:
        os.close(fd)
    return pid


def _wait(control: socket.socket, pid: int, mode: str) -> int:
    """Until the candidate exits; a `kill` from the judge ends it. Returns the raw wait status."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            ready, _, _ = select.select([control, pidfd], [], [])
            if pidfd in ready:
                break
            try:
                message, extra = _receive(control)
            except EOFError:
                message, extra = {"op": "kill"}, []
            for fd in extra:
                os.close(fd)
            if message.get("op") == "kill":
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    # the keeper turns SIGTERM into SIGKILL of its namespace's first process
                    os.kill(pid, signal.SIGTERM if mode == "bwrap" else signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
    if mode == "none":
        _kill_descendants()
    return status


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


def main(argv: list[str]) -> int:
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
        _send(
            control, {"op": "fatal", "error": f"cannot import the runner: {type(err).__name__}: {err}"[:2000]}
        )
        return 2
    _send(control, {"op": "ready", "pid": os.getpid()})
    while True:
        try:
            message, fds = _receive(control)
        except EOFError:
            return 0
        if message.get("op") != "spawn" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            continue
        job = message["job"]
        pid = _spawn(runner, job, fds)
        _send(control, {"op": "spawned", "pid": pid})
        status = _wait(control, pid, mode)
        if mode == "bwrap" and os.WIFEXITED(status) and os.WEXITSTATUS(status) >= 128:
            report = {"op": "exit", "signal": os.WEXITSTATUS(status) - 128, "code": None}
        elif os.WIFSIGNALED(status):
            report = {"op": "exit", "signal": os.WTERMSIG(status), "code": None}
        else:
            report = {"op": "exit", "signal": None, "code": os.WEXITSTATUS(status)}
        _send(control, report)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
