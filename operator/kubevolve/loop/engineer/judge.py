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

This module is the process's main; its parts: judge_config.py (what the pool passes), zygote_handle.py (the
zygote, started or accepted), judge_slot.py (the candidate processes of the slot, their exits and sweeps),
candidate_process.py (the judge's handle on one candidate) and disk_quota.py (sandbox "none": what a
candidate's files take).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from typing import Any

from kubevolve.loop.engineer import confine
from kubevolve.loop.engineer.candidate_process import CandidateProcess
from kubevolve.loop.engineer.judge_config import Config
from kubevolve.loop.engineer.judge_slot import JudgeSlot
from kubevolve.loop.engineer.slot_uids import SweepFailed
from kubevolve.loop.engineer.worker import describe_import_error
from kubevolve.loop.engineer.zygote_handle import ZygoteBroken
from kubevolve.sdk import channel
from kubevolve.sdk.judging import CandidateError, CandidateFailed


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
    candidate.drain_log()
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
