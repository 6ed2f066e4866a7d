"""The legacy evaluation worker, for tasks without a runner: started once per slot inside the sandbox, it
forks one child per job, and the candidate runs in the evaluator's own address space, where it can reach it.
Tasks with a runner are judged instead (judge.py, zygote.py), with the candidate in a process of its own.

Starting a Python interpreter and importing torch or numpy costs far more than most quick evaluations, so the
worker imports the task's evaluator once and forks for each candidate. The child becomes its own session
(one kill reaches everything it starts), takes the job's resource limits, drops to an unprivileged user when
the sandbox asks for it, and runs `evaluate(program_path, stage)` in the candidate's work dir with its output
going to `eval.log` there. The result comes back over a pipe; the worker enforces the wall-clock timeout.

Protocol: one JSON object per line on stdin (a job) and one per line on the worker's original stdout (the
reply). Everything else the worker or the evaluator prints goes to stderr or to the candidate's log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import resource
import selectors
import signal
import sys
import time
import traceback
from typing import Any

LOG_NAME = "eval.log"
MAX_RESULT_BYTES = 4 << 20


def _load_evaluator(path: str, task_root: str) -> Any:
    sys.path.insert(0, task_root)
    spec = importlib.util.spec_from_file_location("kubevolve_task_evaluator", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load evaluator {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def describe_import_error(
    err: BaseException, evaluator_path: str, task_root: str, what: str = "the evaluator"
) -> str:
    """Why the evaluator cannot be imported, in a few lines a task author can act on: the exception and the
    traceback frames in the task's own files (the evaluator and its helpers), not the worker's or importlib's."""
    root = os.path.realpath(task_root)

    def in_task(filename: str) -> bool:
        path = os.path.realpath(filename)
        return path == os.path.realpath(evaluator_path) or path.startswith(root + os.sep)

    frames = [f for f in traceback.extract_tb(err.__traceback__) if in_task(f.filename)]
    # the first line says it all for one-line displays (a table, a status line); the frames follow
    lines = [f"cannot import {what}: {type(err).__name__}: {err}"]
    lines += [line.rstrip("\n") for line in traceback.format_list(frames)]
    if isinstance(err, SyntaxError):  # in a module the evaluator imports: its file, line and a caret
        lines += [line.rstrip("\n") for line in traceback.format_exception_only(err)[:-1]]
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _set_limits(job: dict[str, Any]) -> None:
    cpu = int(job["cpu_seconds"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if job.get("memory_bytes"):
        resource.setrlimit(resource.RLIMIT_DATA, (job["memory_bytes"], job["memory_bytes"]))
    fsize = job["file_bytes"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    nproc = job["max_processes"]
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def errno_of(err: BaseException | None) -> int | None:
    """The errno of an OSError, or of the one it wraps (urllib's URLError keeps it in `reason`) or was raised
    from: what tells a limit or the sandbox apart from a bug, whatever the message says."""
    for _ in range(8):  # bounded: a chain of causes can be a cycle
        if err is None:
            return None
        if isinstance(err, OSError) and isinstance(err.errno, int):
            return err.errno
        reason = getattr(err, "reason", None)
        err = reason if isinstance(reason, BaseException) else err.__cause__ or err.__context__
    return None


def _failure(err: BaseException, status: str, message: str) -> dict[str, Any]:
    """The reply for a raised exception: the message for people; its class and base class names and its errno,
    from which the pool tells the kind of failure (`pool.reply_failure`)."""
    return {
        "ok": False,
        "status": status,
        "error": message,
        "exception_classes": [cls.__name__ for cls in type(err).__mro__],  # MemoryError's subclasses too
        "errno": errno_of(err),
    }


def _send(result_fd: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload, default=_json_default).encode()
    os.write(result_fd, len(data).to_bytes(8, "little"))
    view = memoryview(data)
    while view:
        view = view[os.write(result_fd, view) :]


def _enter_sandbox(job: dict[str, Any], protocol_fd: int) -> None:
    """Own session, limits, unprivileged user, the work dir, output to its log."""
    os.setsid()
    os.close(protocol_fd)
    _set_limits(job)
    uid = os.environ.get("KUBEVOLVE_SANDBOX_UID")
    if uid and os.getuid() == 0:
        os.setgroups([])
        os.setgid(int(uid))
        os.setuid(int(uid))
    os.chdir(job["workdir"])
    log = os.open(LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _run_child(evaluator: Any, job: dict[str, Any], result_fd: int, protocol_fd: int) -> None:
    """In the forked child: isolate, limit, evaluate, report, exit. Never returns."""
    status = 1
    try:
        try:
            _enter_sandbox(job, protocol_fd)
        except BaseException as err:
            message = f"sandbox setup failed: {type(err).__name__}: {err}"
            _send(result_fd, _failure(err, "sandbox_failed", message))
            raise
        try:
            result = evaluator.evaluate(job["program_path"], job["stage"])
            payload = {"ok": True, "result": result}
        except BaseException as err:  # the candidate's failure, reported, not raised
            traceback.print_exc()
            payload = _failure(err, "error", f"{type(err).__name__}: {err}"[:2000])
        _send(result_fd, payload)
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _sweep_namespace() -> None:
    """Kill whatever a candidate left running. Only inside our own pid namespace, where we are pid 2."""
    if os.getpid() > 16:
        return
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)


def _describe_exit(status: int, timed_out: bool, job: dict[str, Any]) -> tuple[str, str]:
    if timed_out:
        return "timeout", f"timeout: evaluation exceeded {job['timeout']:g}s wall clock and was killed"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "cpu_limit", f"CPU time limit exceeded ({job['cpu_seconds']:g}s)"
        if sig == signal.SIGXFSZ:
            return "file_limit", f"file size limit exceeded ({job['file_bytes'] >> 20} MiB)"
        name = signal.Signals(sig).name
        hint = " (probably out of memory)" if sig == signal.SIGKILL else ""
        return "crashed", f"evaluation process killed by {name}{hint}"
    return "crashed", f"evaluation process exited with status {os.WEXITSTATUS(status)} without a result"


def run_job(evaluator: Any, job: dict[str, Any], protocol_fd: int) -> dict[str, Any]:
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _run_child(evaluator, job, write_fd, protocol_fd)
    os.close(write_fd)
    pidfd = os.pidfd_open(pid)
    deadline = started + job["timeout"]
    chunks: list[bytes] = []
    size = 0
    timed_out = exited = False
    with selectors.DefaultSelector() as sel:
        sel.register(read_fd, selectors.EVENT_READ, "data")
        sel.register(pidfd, selectors.EVENT_READ, "exit")
        while not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(remaining):
                if key.data == "exit":
                    exited = True
                else:
                    chunk = os.read(read_fd, 1 << 16)
                    if not chunk:
                        sel.unregister(read_fd)
                    elif size < MAX_RESULT_BYTES:
                        chunks.append(chunk)
                        size += len(chunk)
    if timed_out:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.set_blocking(read_fd, False)
    try:
        while size < MAX_RESULT_BYTES and (chunk := os.read(read_fd, 1 << 16)):
            chunks.append(chunk)
            size += len(chunk)
    except BlockingIOError:
        pass
    os.close(read_fd)
    os.close(pidfd)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # anything the candidate started in its session
    _sweep_namespace()
    duration = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    reply: dict[str, Any] = {
        "id": job["id"],
        "duration": duration,
        "cpu_total": usage.ru_utime + usage.ru_stime,
    }
    data = b"".join(chunks)
    if not timed_out and len(data) >= 8:
        length = int.from_bytes(data[:8], "little")
        body = data[8 : 8 + length]
        if len(body) == length:
            try:
                payload = json.loads(body)
                failed = "sandbox_failed" if payload.get("status") == "sandbox_failed" else "error"
                reply.update(payload, status="ok" if payload.get("ok") else failed)
                return reply
            except ValueError:
                reply.update(ok=False, status="crashed", error="the evaluation result was not valid JSON")
                return reply
    kind, message = _describe_exit(status, timed_out, job)
    reply.update(ok=False, status=kind, error=message)
    return reply


def main(argv: list[str]) -> int:
    evaluator_path, task_root = argv[1], argv[2]
    protocol_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints from the evaluator's import must not corrupt the protocol
    out = os.fdopen(protocol_fd, "w", buffering=1)
    try:
        evaluator = _load_evaluator(evaluator_path, task_root)
    except BaseException as err:
        out.write(json.dumps({"fatal": describe_import_error(err, evaluator_path, task_root)}) + "\n")
        return 2
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        out.write(json.dumps(run_job(evaluator, job, protocol_fd)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
