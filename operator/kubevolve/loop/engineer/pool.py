"""A bounded pool of warm, sandboxed evaluation workers: one per evaluation slot.

A slot is the expensive resource (a GPU on a cluster, a core here). `EvaluatorPool.slot()` hands out a free
slot; the caller runs one or more stages of one candidate in it and gives it back. The pool records busy time
per slot, which is how evaluator occupancy is measured. A worker that dies is restarted on its next job.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import itertools
import json
import math
import os
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubevolve.core.kinds import FailureKind
from kubevolve.core.spec import StageName
from kubevolve.core.task import StageSpec, Task, run_stages
from kubevolve.errors import KubevolveError
from kubevolve.loop.engineer import slot_uids
from kubevolve.loop.engineer.sandbox import SandboxMode, WorkerLaunch, build_judge_launch, build_worker_launch
from kubevolve.loop.engineer.worker import LOG_NAME
from kubevolve.sdk.judging import SEED_VARIABLE

LOG_TAIL_CHARS = 4000
STARTUP_TIMEOUT = 300.0  # a runner or evaluator that imports torch, on a busy machine
PR_SET_DUMPABLE = 4
PROTOCOL_GRACE = 30.0  # seconds beyond a job's timeout before the worker itself is presumed hung


class EvaluatorUnavailable(KubevolveError, RuntimeError):
    """The evaluator cannot run at all (e.g. evaluate.py fails to import): a task error, not a candidate's."""


@dataclass
class StageOutcome:
    ok: bool
    result: Any = None  # the raw dict evaluate() returned, when ok
    status: str = "ok"  # ok | error | timeout | cpu_limit | file_limit | crashed | sandbox_failed
    error: str = ""
    log_tail: str = ""
    duration: float = 0.0
    failure: FailureKind | None = None  # why it failed, when not ok


# the worker's status of a job that did not return -> the kind of failure ("error" is told by its exception)
_STATUS_KINDS = {
    "timeout": FailureKind.TIMEOUT,
    "cpu_limit": FailureKind.CPU_LIMIT,
    "file_limit": FailureKind.FILE_LIMIT,
    "crashed": FailureKind.CRASHED,
    "sandbox_failed": FailureKind.SANDBOX_FAILED,
    "disk_quota": FailureKind.DISK_QUOTA,
    "protocol_violation": FailureKind.PROTOCOL_VIOLATION,
}
# the errno of what the candidate raised -> the limit or sandbox wall it ran into
_ERRNO_KINDS = {
    errno.EAGAIN: FailureKind.PROCESS_LIMIT,  # fork / thread creation under RLIMIT_NPROC
    errno.EFBIG: FailureKind.FILE_LIMIT,
    errno.EROFS: FailureKind.WROTE_OUTSIDE,
    errno.ENOSPC: FailureKind.DISK_QUOTA,  # its scratch tmpfs is full (bubblewrap)
    errno.EDQUOT: FailureKind.DISK_QUOTA,
    errno.ENETUNREACH: FailureKind.NETWORK,
    socket.EAI_AGAIN: FailureKind.NETWORK,  # "Temporary failure in name resolution": no DNS in the sandbox
}


def raised_kind(exception_classes: Any, error_number: Any) -> FailureKind:
    """The kind of an exception the candidate raised, from its class names (its own and its bases) and errno
    as the worker reports them. The child writes that report, so anything malformed counts as plain RAISED."""
    if isinstance(exception_classes, list) and "MemoryError" in exception_classes:
        return FailureKind.MEMORY_LIMIT
    if isinstance(error_number, int):
        return _ERRNO_KINDS.get(error_number, FailureKind.RAISED)
    return FailureKind.RAISED


def explain(kind: FailureKind, error: str, spec: StageSpec) -> str:
    """Name the limit behind an error the candidate saw only as an exception."""
    res = spec.resources
    limits = {
        FailureKind.MEMORY_LIMIT: f"memory limit exceeded ({res.memory_mb} MiB)",
        FailureKind.PROCESS_LIMIT: f"process limit reached ({res.max_processes} processes)",
        FailureKind.FILE_LIMIT: f"file size limit exceeded ({res.max_file_mb} MiB)",
        FailureKind.WROTE_OUTSIDE: "wrote outside its work dir (the sandbox is read-only there)",
        FailureKind.NETWORK: "tried the network (evaluations have none)",
        FailureKind.DISK_QUOTA: f"disk quota exceeded ({res.max_disk_mb} MiB)",
    }
    return f"{limits[kind]}: {error}" if kind in limits else error


def reply_failure(reply: dict[str, Any], spec: StageSpec) -> tuple[FailureKind | None, str]:
    """(kind, message) of a worker's reply: (None, "") when the job returned."""
    if reply.get("ok"):
        return None, ""
    status, error = reply.get("status", "crashed"), str(reply.get("error", ""))
    if status != "error":
        return _STATUS_KINDS.get(status, FailureKind.CRASHED), error
    kind = raised_kind(reply.get("exception_classes"), reply.get("errno"))
    return kind, explain(kind, error, spec)


# Process-wide on purpose: the count is a fact about the host (all processes of a uid), the same for every pool
# and slot of this process, and a /proc scan is what the cache saves.
_PROCESS_COUNTS: dict[int, tuple[float, int]] = {}


def processes_of(uid: int, max_age: float = 10.0) -> int:
    """How many processes (threads count too) the user runs now; cached for a few seconds, it costs a /proc scan."""
    now = time.monotonic()
    cached = _PROCESS_COUNTS.get(uid)
    if cached and now - cached[0] < max_age:
        return cached[1]
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                count += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:
            continue
    _PROCESS_COUNTS[uid] = (now, count)
    return count


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - LOG_TAIL_CHARS))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _protect_host_process() -> None:
    """Without namespaces a candidate runs as our own user: make this process non-dumpable so it cannot read
    our memory or /proc/PID/environ (where credentials such as a store API key live) or ptrace us."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to do
        pass


class Worker:
    def __init__(self, launch: WorkerLaunch):
        self.launch = launch
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.launch.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=self.launch.env,
            start_new_session=True,
            limit=16 << 20,
        )
        async with asyncio.timeout(STARTUP_TIMEOUT):
            line = await self._readline()
        if "fatal" in line:
            await self.stop()
            raise EvaluatorUnavailable(line["fatal"])

    async def _readline(self) -> dict[str, Any]:
        assert self.proc and self.proc.stdout
        raw = await self.proc.stdout.readline()
        if not raw:
            raise ConnectionError("evaluation worker exited")
        reply: dict[str, Any] = json.loads(raw)
        return reply

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def run(self, job: dict[str, Any]) -> dict[str, Any]:
        if not self.alive:
            await self.start()
        assert self.proc and self.proc.stdin
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        await self.proc.stdin.drain()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        async with asyncio.timeout(job["timeout"] + PROTOCOL_GRACE):
            return await self._readline()

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            await self.proc.wait()


@dataclass
class Slot:
    index: int
    scratch: Path
    worker: Worker
    busy_seconds: float = 0.0
    jobs: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def run_stage(self, task: Task, code: str, stage: str, spec: StageSpec) -> StageOutcome:
        """Evaluate `code` at `stage`: judged (the task has a runner) or in the legacy worker."""
        if self.worker.launch.judged:
            return await self._judged_stage(task, code, stage, spec)
        return await self._legacy_stage(task, code, stage, spec)

    def _limits(self, spec: StageSpec, uid: int | None) -> dict[str, Any]:
        res = spec.resources
        return {
            "timeout": spec.timeout_seconds,
            "cpu_seconds": math.ceil(spec.timeout_seconds * max(res.cpu, 1)),
            "memory_bytes": None if res.gpus else res.memory_mb << 20,
            "file_bytes": res.max_file_mb << 20,
            # RLIMIT_NPROC counts every process of the user, so the limit is what exists already plus the budget
            "max_processes": processes_of(uid if uid is not None else os.geteuid()) + res.max_processes,
        }

    async def _exchange(self, job: dict[str, Any]) -> tuple[dict[str, Any], float]:
        started = time.monotonic()
        try:
            reply = await self.worker.run(job)
        except (TimeoutError, ConnectionError, ValueError) as err:
            await self.worker.stop()
            reply = {"ok": False, "status": "crashed", "error": f"evaluation worker failed: {err or 'hung'}"}
        finally:
            elapsed = time.monotonic() - started
            self.busy_seconds += elapsed
            self.jobs += 1
        return reply, elapsed

    async def _judged_stage(self, task: Task, code: str, stage: str, spec: StageSpec) -> StageOutcome:
        """The judge process runs the task's judge; the candidate runs in a fresh process the judge starts."""
        uid = self.worker.launch.slot_uid
        job = {
            "id": f"job-{next(self._ids)}",
            "code": code,
            "program_name": Path(task.spec.program).name,
            "required": task.spec.checks.required_names,
            "stage": stage,
            "disk_bytes": spec.resources.max_disk_mb << 20,
            "network": spec.network,
            **self._limits(spec, uid),
        }
        # bubblewrap: the next candidate's process waits beside this one (judge_slot.JudgeSlot.prepare_spare);
        # as root only the candidate runs as the slot's uid, else its keeper and init run as ours too
        spare = (1 if uid is not None else 3) if self.worker.launch.mode == "bwrap" else 0
        if uid is not None or self.worker.launch.remote_zygote:
            # the slot's own uid (or the candidate container's: the zygote adds its own threads): nothing
            # else runs as it, the candidate itself counts
            job["max_processes"] = spec.resources.max_processes + 1 + spare
        else:
            job["max_processes"] += spare
        reply, elapsed = await self._exchange(job)
        failure, error = reply_failure(reply, spec)
        return StageOutcome(
            ok=bool(reply.get("ok")),
            result=reply.get("result"),
            status=reply.get("status", "crashed"),
            error=error,
            log_tail=str(reply.get("log_tail", ""))[-LOG_TAIL_CHARS:],
            duration=reply.get("duration", elapsed),
            failure=failure,
        )

    async def _legacy_stage(self, task: Task, code: str, stage: str, spec: StageSpec) -> StageOutcome:
        """Evaluate `code` at `stage` in a fresh work dir inside this slot's scratch folder."""
        workdir = self.scratch / f"job-{next(self._ids)}"
        workdir.mkdir()
        program = workdir / Path(task.spec.program).name
        program.write_text(code)
        uid = self.worker.launch.drop_to_uid
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chown(program, uid, uid)
        job = {
            "id": workdir.name,
            "workdir": str(workdir),
            "program_path": str(program),
            "stage": stage,
            **self._limits(spec, uid),
        }
        reply, elapsed = await self._exchange(job)
        failure, error = reply_failure(reply, spec)
        outcome = StageOutcome(
            ok=bool(reply.get("ok")),
            result=reply.get("result"),
            status=reply.get("status", "crashed"),
            error=error,
            log_tail=_log_tail(workdir / LOG_NAME),
            duration=reply.get("duration", elapsed),
            failure=failure,
        )
        shutil.rmtree(workdir, ignore_errors=True)
        return outcome


def network_problem(task: Task, stages: Sequence[StageName] | None, mode: str, *, remote: bool) -> str | None:
    """Why the run's stages cannot have the network they ask for in this sandbox; None if they can. A stage
    with `network: ranks` lets the candidate open TCP sockets: bubblewrap bounds them with a network namespace
    per candidate and the pod layout with the pod's NetworkPolicy, but sandbox "none" on a machine has
    neither, so the host's network (its loopback services too) would be the candidate's."""
    if mode != "none" or remote:
        return None
    for stage in run_stages(task, stages):
        if task.spec.stages[stage].network == "ranks":
            return (
                f"task {task.name!r}, stage {stage!r}: `stages.{stage}.network: ranks` lets the candidate's "
                "processes open TCP sockets, which only a network namespace per candidate (sandbox 'bwrap': "
                "install the 'bubblewrap' package) or an evaluation pod's NetworkPolicy confines; with "
                "sandbox 'none' here they would reach the host's network. Run with bubblewrap, in Kubernetes, "
                f"or without that stage (the run's `stages`)"
            )
    return None


class EvaluatorPool:
    """`zygote_socket` (one slot): the pod layout, where the candidate's side is another container whose
    zygote connects to the judge there, and `shared_root` the volume the two containers share. `stages`: the
    ones the run evaluates (None: all the task's), whose network settings the sandbox must be able to give."""

    def __init__(
        self,
        task: Task,
        slots: int,
        workspace: Path,
        sandbox: SandboxMode = "auto",
        *,
        stages: Sequence[StageName] | None = None,
        zygote_socket: Path | None = None,
        shared_root: Path | None = None,
    ):
        self.task = task
        self.stages = stages
        self.size = slots
        self.workspace = workspace
        self.sandbox = sandbox
        self.zygote_socket, self.shared_root = zygote_socket, shared_root
        if zygote_socket is not None and slots != 1:
            raise ValueError("the pod layout has one candidate container: one slot")
        self.slots: list[Slot] = []
        self._free: asyncio.Queue[Slot] = asyncio.Queue()
        self.started_at = 0.0
        self.mode = "none"
        self.uids: list[slot_uids.SlotUid] = []
        # what judges draw from (held-out inputs, generated data): one secret per run, unless set to reproduce
        self.judge_seed = int(os.environ.get(SEED_VARIABLE) or secrets.randbits(63))

    def _launch(self, index: int, scratch: Path, threads: int, gpus: int) -> WorkerLaunch:
        runner = self.task.runner_path
        if runner is None and self.zygote_socket is not None:
            raise EvaluatorUnavailable(
                f"task {self.task.name!r} has no runner: a legacy task runs in one container, not the pod layout"
            )
        if runner is None:
            return build_worker_launch(
                self.sandbox,
                scratch=scratch,
                task_root=self.task.root,
                evaluator=self.task.evaluator_path,
                threads=threads,
                gpus=gpus,
            )
        uid = self.uids[index] if self.uids else None
        return build_judge_launch(
            self.sandbox,
            task_root=self.task.root,
            evaluator=self.task.evaluator_path,
            runner=runner,
            uid=uid.uid if uid else None,
            scratch_root=uid.scratch_root() if uid else scratch,
            judge_seed=self.judge_seed,
            threads=threads,
            gpus=gpus,
            zygote_socket=self.zygote_socket,
            shared_root=self.shared_root,
        )

    async def start(self) -> None:
        resources = [s.resources for s in self.task.spec.stages.values()]
        threads = max(1, math.ceil(max(r.cpu for r in resources)))
        gpus = max(r.gpus for r in resources)
        self.workspace.mkdir(parents=True, exist_ok=True)
        if self.task.runner_path is not None and os.geteuid() == 0:
            self.uids = slot_uids.allocate(self.size)
        for index in range(self.size):
            scratch = self.workspace / f"slot-{index}"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            launch = self._launch(index, scratch, threads, gpus)
            self.mode = launch.mode
            if launch.drop_to_uid is not None:
                os.chown(scratch, launch.drop_to_uid, launch.drop_to_uid)
            self.slots.append(Slot(index, scratch, Worker(launch)))
        problem = network_problem(self.task, self.stages, self.mode, remote=self.zygote_socket is not None)
        if problem:
            await self.close()
            raise EvaluatorUnavailable(problem)
        if self.mode == "none":
            _protect_host_process()
        results = await asyncio.gather(*(slot.worker.start() for slot in self.slots), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise errors[0]
        for slot in self.slots:
            self._free.put_nowait(slot)
        self.started_at = time.monotonic()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        slot = await self._free.get()
        if not self.started_at:
            self.started_at = time.monotonic()
        try:
            yield slot
        finally:
            self._free.put_nowait(slot)

    def busy(self) -> int:
        """Slots evaluating right now."""
        return self.size - self._free.qsize() if self.slots else 0

    def reset_accounting(self) -> None:
        """Measure occupancy from the next job on: the pipelined phase, not start-up or the first LLM call."""
        self.started_at = 0.0
        for slot in self.slots:
            slot.busy_seconds = 0.0

    def occupancy(self) -> float:
        """Busy slot time over total slot time since start."""
        if not self.started_at:
            return 0.0
        total = (time.monotonic() - self.started_at) * self.size
        return sum(s.busy_seconds for s in self.slots) / total if total > 0 else 0.0

    async def close(self) -> None:
        await asyncio.gather(*(slot.worker.stop() for slot in self.slots))
        for slot in self.slots:
            shutil.rmtree(slot.scratch, ignore_errors=True)
        for uid in self.uids:  # whatever escaped the judges' sweeps (a judge killed mid-candidate)
            slot_uids.kill_uid(uid.uid)
            slot_uids.remove_files_of_uid(uid.uid)
            shutil.rmtree(uid.scratch_root(), ignore_errors=True)
            uid.release()
        self.uids = []
