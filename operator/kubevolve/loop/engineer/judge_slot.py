"""The judge's half of a slot: its zygote, the candidate processes it asked for (one started ahead of its job),
their exits, and the sweep after each with sandbox "none"."""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubevolve.loop.engineer.judge_config import Config
from kubevolve.loop.engineer.slot_uids import kill_uid, remove_files_of_uid
from kubevolve.loop.engineer.zygote_handle import Zygote, ZygoteBroken

EXIT_GRACE = 5.0  # seconds to wait for a killed candidate's exit before the zygote is presumed broken


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
