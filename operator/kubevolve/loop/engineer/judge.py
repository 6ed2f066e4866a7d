"""The trusted side of a slot: the process that imports the task's judge and in which no candidate code runs.

Started once per slot by the pool, outside the sandbox, with a clean environment, its own session, and not
dumpable (a process of the same uid cannot ptrace it or read its memory). It starts the slot's zygote
(zygote.py, inside bubblewrap or plainly), and for each job from the engine calls the task's
`judge(candidate, stage)` with a handle whose requests go to a fresh confined candidate process. What comes back
is data, read with limits (channel.py); the metrics are computed here, from that data and from what the judge
holds and the candidate never sees (labels, the seed of held-out inputs, its own clock).

With sandbox "none" the kernel gives the candidate no private scratch, /tmp or process tree, so this process
makes them: a fresh scratch folder per candidate (deleted after), a watcher that kills the candidate when its
files pass the quota, and, as root, the sweep of every process and every file in /tmp, /var/tmp and /dev/shm
left by the slot's uid (which nothing else uses, see slot_uids.allocate).

In a Kubernetes evaluation pod (the pod layout, `zygote_socket`) the zygote is the candidate container's own
process: this process listens on a Unix socket in the volume the two containers share, accepts one
connection (the zygote's, made before any candidate code exists), and never another: a zygote that dies is
not replaced, and the candidate's evaluation ends with a sandbox failure. Its candidates' scratch folders are
in that volume, writable by the other container's uid; the whole volume counts against the disk quota, and
a candidate is killed through the zygote (its pids are another pid namespace's).

Engine protocol: as the legacy worker (worker.py), one JSON job per line on stdin, one JSON reply per line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubevolve.errors import KubevolveError
from kubevolve.loop.engineer import confine
from kubevolve.loop.engineer.slot_uids import (
    SweepFailed,
    held_deleted_bytes,
    kill_uid,
    remove_files_of_uid,
    uid_entries,
)
from kubevolve.loop.engineer.worker import describe_import_error
from kubevolve.loop.engineer.zygote import SETUP_FAILED
from kubevolve.sdk import channel
from kubevolve.sdk.judging import CandidateCrashed, CandidateError, CandidateFailed

LOG_TAIL_BYTES = 4000
STARTUP_TIMEOUT = 300.0  # importing a runner that imports torch, on a busy machine
MAX_CONTROL = 1 << 16
EXIT_GRACE = 5.0  # seconds to wait for a killed candidate's exit before the zygote is presumed broken
QUOTA_POLL = 0.1
MAX_SCRATCH_ENTRIES = 100_000  # sandbox "none": more files than this counts as over quota


class ZygoteBroken(KubevolveError, RuntimeError):
    """The zygote died or said something that is not the protocol: restart it."""


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy and torch scalars in the judge's metrics
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _load_judge(path: str, task_root: str) -> Any:
    sys.path.insert(0, task_root)
    spec = importlib.util.spec_from_file_location("kubevolve_task_judge", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the judge {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "judge", None)):
        raise ImportError(f"{path} defines no function judge(candidate, stage)")
    return module


# --- sandbox "none": what the kernel does not do for us ------------------------------------------------------


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


# --- the zygote ----------------------------------------------------------------------------------------------


@dataclass
class Config:
    """What the pool tells a judge worker (one JSON argument)."""

    evaluator: str
    task_root: str
    mode: str  # bwrap | none
    zygote_argv: list[str]
    zygote_env: dict[str, str]
    uid: int | None = None  # root only: the slot's own uid
    scratch_root: str | None = None  # sandbox "none": where per-candidate scratch folders go
    # the pod layout: the zygote connects here from the candidate's container (zygote_argv is then unused),
    # told to load `runner`; everything under `shared_root` is the candidate's to write and counts as its disk
    zygote_socket: str | None = None
    runner: str = ""
    shared_root: str | None = None


class Zygote:
    def __init__(self, config: Config):
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.accepted = False  # the pod layout: a pod's one zygote has connected

    def start(self) -> None:
        if self.config.zygote_socket is not None:
            self.control = self._accept(self.config.zygote_socket)
        else:
            self._spawn()
        message = self.receive(STARTUP_TIMEOUT)
        if message.get("op") == "fatal":
            self.stop()
            raise RuntimeError(str(message.get("error"))[:4000])
        if message.get("op") != "ready":
            self.stop()
            raise RuntimeError(f"the zygote did not start: {message}")

    def _accept(self, path: str) -> socket.socket:
        """The pod layout: the one connection of the candidate container's zygote, told what to load. The
        socket is gone once it is taken, so nothing started later (a candidate) can connect in its place."""
        if self.accepted:
            raise RuntimeError("the candidate container's zygote is gone (a pod has one; it is not replaced)")
        self.accepted = True
        folder = os.path.dirname(path)
        os.makedirs(folder, mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(path)
            os.chmod(path, 0o777)  # the other container's uid must be able to connect
            listener.listen(1)
            if not select.select([listener], [], [], STARTUP_TIMEOUT)[0]:
                raise RuntimeError(
                    f"no zygote connected from the candidate's container within {STARTUP_TIMEOUT:g}s"
                )
            control, _ = listener.accept()
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        load = {"op": "load", "runner": self.config.runner, "task_root": self.config.task_root}
        control.send(json.dumps(load).encode())
        return control

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [*self.config.zygote_argv, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=self.config.zygote_env,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.control = ours

    @property
    def alive(self) -> bool:
        if self.config.zygote_socket is not None:  # another container's process: alive while connected
            return self.control is not None
        return self.proc is not None and self.proc.poll() is None

    def receive(self, timeout: float | None) -> dict[str, Any]:
        """The next control message; the zygote is on the untrusted side, so anything odd means broken."""
        assert self.control is not None
        ready, _, _ = select.select([self.control], [], [], timeout)
        if not ready:
            raise ZygoteBroken("the zygote did not answer in time")
        data = self.control.recv(MAX_CONTROL)
        if not data:
            raise ZygoteBroken("the zygote exited")
        try:
            message = json.loads(data)
        except ValueError:
            raise ZygoteBroken("the zygote sent something that is not JSON") from None
        if not isinstance(message, dict):
            raise ZygoteBroken("the zygote sent something that is not a message")
        return message

    def send(self, message: dict[str, Any], fds: list[int] = ()) -> None:  # type: ignore[assignment]
        assert self.control is not None
        try:
            socket.send_fds(self.control, [json.dumps(message).encode()], list(fds))
        except OSError as err:
            raise ZygoteBroken(f"the zygote is gone: {err}") from None

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


# --- one candidate ------------------------------------------------------------------------------------------


def _describe_exit(signum: int | None, code: int | None, job: dict[str, Any]) -> CandidateCrashed:
    if signum is not None:
        if signum == signal.SIGXCPU:
            return CandidateCrashed(f"CPU time limit exceeded ({job['cpu_seconds']:g}s)", "cpu_limit")
        if signum == signal.SIGXFSZ:
            return CandidateCrashed(f"file size limit exceeded ({job['file_bytes'] >> 20} MiB)", "file_limit")
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        hint = " (probably out of memory)" if signum == signal.SIGKILL else ""
        return CandidateCrashed(f"candidate process killed by {name}{hint}", "crashed")
    if code == SETUP_FAILED:
        return CandidateCrashed("the sandbox could not be set up for the candidate", "sandbox_failed")
    return CandidateCrashed(f"candidate process exited with status {code} without a reply", "crashed")


@dataclass
class CandidateProcess:
    """The judge's handle (kubevolve.sdk.judging.Candidate) on one candidate at one stage.

    Nothing waits for an answer it does not need: the spawn, the program and the first request go out
    together, and the process is ended after the judge's reply has gone to the engine. Each wait between
    processes costs a scheduling round on a busy machine."""

    slot: JudgeSlot
    job: dict[str, Any]
    deadline: float
    seconds: float = 0.0
    log: bytearray = field(default_factory=bytearray)
    _fds: dict[str, int] = field(default_factory=dict)
    _ident: int = 0  # the zygote's name for the current process
    _exited: CandidateCrashed | None = None
    _scratch: str | None = None
    _over_quota: threading.Event = field(default_factory=threading.Event)
    _watching: threading.Event | None = None

    # the Candidate protocol

    def request(
        self, request: dict[str, Any], *, timeout: float | None = None, max_bytes: int | None = None
    ) -> Any:
        if not isinstance(request, dict):
            raise TypeError(f"a request is a dict, got {type(request).__name__}")
        outgoing, replies = channel.encode(request), 1
        if not self._fds:
            hello = {
                "program": self.job["code"],
                "name": self.job["program_name"],
                "required": self.job["required"],
            }
            self._start()
            outgoing, replies = channel.encode(hello) + outgoing, 2
        started = time.perf_counter()
        reply = self._exchange(outgoing, replies, timeout, max_bytes or channel.DEFAULT_MAX_BYTES)
        self.seconds = time.perf_counter() - started
        return reply

    def restart(self) -> None:
        self.close()
        self._exited = None

    # the process

    def _start(self) -> None:
        self.slot.await_killed()
        spare = self.slot.take_spare(spawn_params(self.job, self.slot.config))
        self._fds, self._scratch, self._ident = spare.fds, spare.scratch, spare.ident
        if self._scratch is not None:
            self._watch_quota()
        if self.slot.config.mode == "bwrap":  # namespaces apart: the next one can get ready meanwhile
            self.slot.prepare_spare()

    def _exchange(self, outgoing: bytes, replies: int, timeout: float | None, max_bytes: int) -> Any:
        """Write the messages, read as many replies; drain the log all along; stop at the deadline, at the
        process's exit, or at the first reply that is an error. Returns the last reply's value."""
        if self._exited is not None:
            raise self._exited
        deadline = self.deadline if timeout is None else min(self.deadline, time.monotonic() + timeout)
        reader = channel.Reader(max_bytes)
        pending = memoryview(outgoing)
        control = self.slot.zygote.control
        assert control is not None
        reading: set[int | socket.socket] = {self._fds["reply"], self._fds["log"], control}
        value: Any = None
        while True:
            if self._over_quota.is_set():
                self._fail(CandidateCrashed(self._quota_message(), "disk_quota"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                limit = self.job["timeout"] if timeout is None else timeout
                self._fail(
                    CandidateCrashed(
                        f"timeout: evaluation exceeded {limit:g}s wall clock and was killed", "timeout"
                    )
                )
            if pending:
                try:
                    pending = pending[os.write(self._fds["request"], pending) :]
                except BlockingIOError:
                    pass
                except BrokenPipeError:
                    pending = memoryview(b"")  # it closed its end: its exit report tells why
            writers = [self._fds["request"]] if pending else []
            ready_r, ready_w, _ = select.select(list(reading), writers, [], min(remaining, QUOTA_POLL))
            if self._fds["log"] in ready_r and not self._read_log():
                reading.discard(self._fds["log"])
            if self._fds["reply"] in ready_r:
                received, still_open = self._read_replies(reader, replies)
                for reply in received:
                    value, replies = self._unpack(reply), replies - 1
                    if replies == 0:
                        return value
                if not still_open:  # the channel is closed; what happens to the process decides the rest
                    reading.discard(self._fds["reply"])
            if control in ready_r:
                self.slot.on_control()
            if self._ident in self.slot.exits:
                self._on_exit(self.slot.exits.pop(self._ident))
                received, _ = self._read_replies(reader, replies)
                for reply in received:
                    value, replies = self._unpack(reply), replies - 1
                    if replies == 0:
                        return value
                raise self._exited  # type: ignore[misc]

    def _read_replies(self, reader: channel.Reader, wanted: int) -> tuple[list[Any], bool]:
        """(up to `wanted` replies completed by what can be read now, whether the channel is still open).
        Whatever follows the replies it waits for is not parsed: it cannot count, and must not fail them."""
        received: list[Any] = []
        while True:
            try:
                data = os.read(self._fds["reply"], 1 << 20)
            except BlockingIOError:
                return received, True
            if not data:
                return received, False
            try:
                for message in reader.feed(data):
                    received.append(message)
                    if len(received) == wanted:
                        return received, True
            except channel.ProtocolViolation:
                self.close()
                raise

    def _unpack(self, reply: Any) -> Any:
        """A reply is {"ok": true, "value": ...} or {"ok": false, "error": text, ...}; anything else is a
        protocol violation."""
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            self.close()
            raise channel.ProtocolViolation("a reply must be an object with a boolean 'ok'")
        if reply["ok"]:
            if set(reply) != {"ok", "value"}:
                self.close()
                raise channel.ProtocolViolation("a reply with ok=true holds exactly 'ok' and 'value'")
            return reply["value"]
        classes = reply.get("exception_classes")
        errno = reply.get("errno")
        raise CandidateError(
            str(reply.get("error", ""))[:2000],
            [str(c)[:100] for c in classes[:32]] if isinstance(classes, list) else [],
            errno if isinstance(errno, int) and not isinstance(errno, bool) else None,
        )

    def _read_log(self) -> bool:
        """Keep the tail of what it printed; False once the log is closed."""
        try:
            while data := os.read(self._fds["log"], 1 << 16):
                self.log += data
                del self.log[:-LOG_TAIL_BYTES]
        except BlockingIOError:
            return True
        return False

    def _on_exit(self, report: dict[str, Any] | None) -> None:
        report = report or {}
        signum, code = report.get("signal"), report.get("code")
        if self._over_quota.is_set():  # the quota watch killed it: its exit report may come in first
            self._exited = CandidateCrashed(self._quota_message(), "disk_quota")
        else:
            self._exited = _describe_exit(
                signum if isinstance(signum, int) else None, code if isinstance(code, int) else None, self.job
            )
        if self._fds:
            self._read_log()

    def _fail(self, error: CandidateCrashed) -> None:
        self.close()
        self._exited = error
        raise error

    def close(self) -> None:
        """End the process (if running), collect its log, sweep what it left. A candidate is killed, never
        asked to leave: nothing it could still say would count, and waiting for it to exit costs a round
        through three processes."""
        if not self._fds:
            return
        try:
            if self._exited is None and self._scratch is None:
                self.slot.kill(self._ident, wait=False)  # its own namespaces: nothing of it to sweep
            elif self._exited is None:
                self._on_exit(self.slot.kill(self._ident))
        except ZygoteBroken:
            self.slot.reset_zygote()
            self._exited = self._exited or CandidateCrashed("the candidate's sandbox broke", "sandbox_failed")
        finally:
            with contextlib.suppress(OSError):
                self._read_log()
            for fd in self._fds.values():
                os.close(fd)
            self._fds = {}
            if self._watching is not None:
                self._watching.set()
            self.slot.sweep(self._scratch)
            self._scratch = None

    # sandbox "none": the quota

    def _quota_roots(self) -> list[str]:
        if self.slot.config.shared_root is not None:  # the pod layout: all the candidate can write
            return [self.slot.config.shared_root]
        roots = [self._scratch] if self._scratch else []
        uid = self.slot.config.uid
        return roots + (uid_entries(uid) if uid is not None else [])

    def _quota_message(self) -> str:
        return f"disk quota exceeded ({self.job['disk_bytes'] >> 20} MiB in its scratch and the shared /tmp folders)"

    def _watch_quota(self) -> None:
        """A thread that kills the candidate's processes once its files pass the quota (the kernel has no
        quota for us without a mount namespace; this one overshoots by what it writes in QUOTA_POLL)."""
        stop = self._watching = threading.Event()
        limit = self.job["disk_bytes"]

        def watch() -> None:
            uid = self.slot.config.uid
            shared = self.slot.config.shared_root
            while not stop.wait(QUOTA_POLL):
                counted = tmpfs_usage(shared) if shared is not None else None
                if counted is not None:
                    used, entries = counted
                else:
                    used, entries = disk_usage(self._quota_roots())
                    used += held_deleted_bytes(uid) if uid is not None else 0
                if used > limit or entries > MAX_SCRATCH_ENTRIES:
                    self._over_quota.set()
                    self.slot.kill_candidate_processes()
                    return

        threading.Thread(target=watch, daemon=True).start()


def spawn_params(job: dict[str, Any], config: Config) -> dict[str, Any]:
    """What the zygote needs to start a candidate process for `job`: its limits, the mode, the uid, and its
    stage's network ("isolated" or "ranks", core.task.StageSpec)."""
    params = {key: job[key] for key in ("cpu_seconds", "memory_bytes", "file_bytes", "max_processes")}
    params.update(mode=config.mode, uid=config.uid, disk_bytes=job["disk_bytes"])
    params.update(network=job.get("network", "isolated"))
    return params


@dataclass
class Spare:
    """A candidate process started ahead of its job, confined and waiting for its program."""

    ident: int
    params: dict[str, Any]
    fds: dict[str, int]
    scratch: str | None

    def discard(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


class JudgeSlot:
    """The judge's half of a slot: its zygote, its candidates' processes (by id), their scratch and sweeping.

    The next candidate's process is started ahead of its job (`prepare_spare`), with the limits of the task's
    first stage: forking it and setting up its namespaces then happens while the current candidate runs
    (bubblewrap: each has namespaces of its own) or while the engine is busy elsewhere (sandbox "none",
    where it must wait for the sweep after the last one), and a job of that stage finds it waiting."""

    def __init__(self, config: Config):
        self.config = config
        self.zygote = Zygote(config)
        self.pids: dict[int, int] = {}  # id -> pid, of the processes the zygote reported spawned
        self.exits: dict[int, dict[str, Any]] = {}  # id -> exit report, until its owner reads it
        self.spare: Spare | None = None
        self.spare_params: dict[str, Any] | None = None
        self.killed: set[int] = set()  # killed, exit not read yet
        self._ids = itertools.count(1)
        self._count = 0

    def _spawn(self, params: dict[str, Any]) -> Spare:
        if not self.zygote.alive:
            self.reset_zygote()
            try:
                self.zygote.start()
            except (RuntimeError, OSError) as err:
                raise ZygoteBroken(f"the zygote could not be restarted: {err}") from None
        ident = next(self._ids)
        scratch = self.new_scratch() if self.config.mode == "none" else None
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        log_r, log_w = os.pipe()
        fds = {"request": request_w, "reply": reply_r, "log": log_r}
        for fd in fds.values():
            os.set_blocking(fd, False)
        try:
            job = dict(params, scratch=scratch) if scratch else params
            self.zygote.send({"op": "spawn", "id": ident, "job": job}, [request_r, reply_w, log_w])
        finally:
            for fd in (request_r, reply_w, log_w):
                os.close(fd)
        return Spare(ident, params, fds, scratch)

    def take_spare(self, params: dict[str, Any]) -> Spare:
        """The waiting process if it was started with `params` and is still alive, else a fresh one."""
        if self.spare_params is None:
            self.spare_params = params  # the first job is of the task's first stage
        spare, self.spare = self.spare, None
        if spare is not None:
            self.drain()
            if spare.params != params or spare.ident in self.exits:
                self._end(spare)
                spare = None
        return spare or self._spawn(params)

    def prepare_spare(self) -> None:
        if self.spare is None and self.spare_params is not None and self.zygote.alive:
            with contextlib.suppress(ZygoteBroken, OSError):
                self.spare = self._spawn(self.spare_params)

    def _end(self, spare: Spare) -> None:
        """Stop a waiting process that will not be used, and sweep after it."""
        spare.discard()
        self.kill(spare.ident)
        self.sweep(spare.scratch)

    def on_control(self, timeout: float | None = 0) -> None:
        """Read one message of the zygote: a process spawned, or one exited."""
        message = self.zygote.receive(timeout)
        ident = message.get("id")
        if message.get("op") == "spawned" and isinstance(ident, int) and isinstance(message.get("pid"), int):
            self.pids[ident] = message["pid"]
        elif message.get("op") == "exit" and isinstance(ident, int):
            self.pids.pop(ident, None)
            self.exits[ident] = message
        else:
            raise ZygoteBroken(f"unexpected message from the zygote: {str(message)[:200]}")

    def drain(self) -> None:
        """Read whatever the zygote has said so far."""
        control = self.zygote.control
        assert control is not None
        while select.select([control], [], [], 0)[0]:
            self.on_control()

    def kill(self, ident: int, wait: bool = True) -> dict[str, Any] | None:
        """Kill process `ident` and return its exit report (the zygote is broken if it never comes). Without
        `wait` the report is awaited before the next candidate starts (`await_killed`), not now: the engine
        gets the judge's verdict without waiting for the kill."""
        if ident not in self.exits:
            self.zygote.send({"op": "kill", "id": ident})
        if not wait:
            self.killed.add(ident)
            return None
        return self._exit_of(ident)

    def _exit_of(self, ident: int) -> dict[str, Any]:
        end = time.monotonic() + EXIT_GRACE
        while ident not in self.exits:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise ZygoteBroken("a killed candidate process did not exit")
            self.on_control(remaining)
        return self.exits.pop(ident)

    def await_killed(self) -> None:
        """The exits of the candidates killed without waiting: none of their processes counts against the next
        one's process limit (the slot's uid is shared)."""
        while self.killed:
            self._exit_of(self.killed.pop())

    def reset_zygote(self) -> None:
        if self.spare is not None:
            self.spare.discard()
            self.spare = None
        self.zygote.stop()
        self.kill_candidate_processes()
        self.pids.clear()
        self.exits.clear()
        self.killed.clear()

    def kill_candidate_processes(self) -> None:
        """Sandbox "none": every process of the slot's uid (root), else the candidate's process group; in the
        pod layout the zygote kills them (their pids are not ours), and once it is gone the kernel has (it was
        their container's pid 1)."""
        if self.config.mode != "none":
            return
        if self.config.zygote_socket is not None:
            if self.zygote.control is not None:
                for ident in list(self.pids):
                    with contextlib.suppress(ZygoteBroken):
                        self.zygote.send({"op": "kill", "id": ident})
            return
        if self.config.uid is not None:
            kill_uid(self.config.uid)
            return
        for pid in list(self.pids.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def new_scratch(self) -> str:
        assert self.config.scratch_root is not None
        self._count += 1
        path = Path(self.config.scratch_root) / f"candidate-{self._count}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o700)
        if self.config.uid is not None:
            os.chown(path, self.config.uid, self.config.uid)
        elif self.config.zygote_socket is not None:  # the candidate is another container's uid: no chown
            os.chmod(path, 0o777)
        return str(path)

    def sweep(self, scratch: str | None) -> None:
        """After a candidate (sandbox "none"): its processes, its scratch, its files in the shared folders."""
        if self.config.mode != "none":
            return  # its pid namespace and tmpfs went with it
        if self.config.uid is not None:
            kill_uid(self.config.uid)
            remove_files_of_uid(self.config.uid)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


# --- the worker ---------------------------------------------------------------------------------------------


def _failure(err: BaseException, status: str) -> dict[str, Any]:
    if isinstance(err, CandidateError):
        return {
            "ok": False,
            "status": "error",
            "error": str(err),
            "exception_classes": err.exception_classes,
            "errno": err.errno,
        }
    if isinstance(err, CandidateFailed):
        return {"ok": False, "status": err.kind, "error": str(err)}
    if isinstance(err, channel.ProtocolViolation):
        return {"ok": False, "status": "protocol_violation", "error": f"bad output from the candidate: {err}"}
    return {
        "ok": False,
        "status": status,
        "error": f"{type(err).__name__}: {err}"[:2000],
        "exception_classes": [cls.__name__ for cls in type(err).__mro__],
        "errno": getattr(err, "errno", None) if isinstance(getattr(err, "errno", None), int) else None,
    }


def run_job(judge: Any, slot: JudgeSlot, job: dict[str, Any]) -> tuple[dict[str, Any], CandidateProcess]:
    """The reply for the engine, and the candidate, whose process the caller closes once the reply is sent
    (ending it and sweeping after it takes milliseconds the engine need not wait for; the next job waits)."""
    started = time.monotonic()
    candidate = CandidateProcess(slot, job, started + job["timeout"])
    try:
        reply = {"ok": True, "status": "ok", "result": judge.judge(candidate, job["stage"])}
    except (ZygoteBroken, SweepFailed) as err:
        slot.reset_zygote()
        reply = {"ok": False, "status": "sandbox_failed", "error": f"the candidate's sandbox broke: {err}"}
    except BaseException as err:  # the candidate's failure, or the judge's verdict on it
        reply = _failure(err, "error")
    if candidate._fds:
        candidate._read_log()
    reply.update(
        id=job["id"], duration=time.monotonic() - started, log_tail=candidate.log.decode(errors="replace")
    )
    return reply, candidate


def main(argv: list[str]) -> int:
    config = Config(**json.loads(argv[1]))
    protocol_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints of the judge must not corrupt the protocol
    out = os.fdopen(protocol_fd, "w", buffering=1)
    confine.not_dumpable()
    slot = JudgeSlot(config)
    try:
        judge = _load_judge(config.evaluator, config.task_root)
    except BaseException as err:
        out.write(
            json.dumps({"fatal": describe_import_error(err, config.evaluator, config.task_root)}) + "\n"
        )
        return 2
    try:
        slot.zygote.start()
    except BaseException as err:  # the runner's import error, as the zygote described it
        slot.zygote.stop()
        message = str(err) if isinstance(err, RuntimeError) else f"{type(err).__name__}: {err}"
        out.write(json.dumps({"fatal": message[:4000]}) + "\n")
        return 2
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    try:
        for line in sys.stdin:
            if line.strip():
                job = json.loads(line)
                reply, candidate = run_job(judge, slot, job)
                out.write(json.dumps(reply, default=_json_default) + "\n")
                try:
                    candidate.close()
                    slot.prepare_spare()
                except SweepFailed as err:  # the next candidate's sweep tries again; say so where it shows
                    print(f"kubevolve judge: {err}", file=sys.stderr)
                    slot.reset_zygote()
    finally:
        slot.reset_zygote()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
