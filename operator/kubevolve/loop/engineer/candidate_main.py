"""What runs in a candidate's process, from the zygote's fork to its exit: confine itself (confine.py), load the
program the judge sends first, answer each request with the runner's `run(program, request)`, exit.

Imported by the zygote before any candidate exists, never by a candidate itself: what a forked candidate runs
is already in memory, whatever its uid may read.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from kubevolve.loop.engineer import confine
from kubevolve.loop.engineer.worker import errno_of
from kubevolve.sdk import channel
from kubevolve.sdk.evaluator_kit import load_program

REQUEST_FD, REPLY_FD = 3, 4  # in the candidate, after keep_only_fds
RANKS = "ranks"  # a job's `network` (a stage's, core.task.StageSpec) that lets its processes meet over TCP
SETUP_FAILED = 121  # the exit status of a candidate whose confinement could not be set up


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


def run_candidate(runner: Any, job: dict[str, Any], fds: list[int], parent: int) -> None:
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
