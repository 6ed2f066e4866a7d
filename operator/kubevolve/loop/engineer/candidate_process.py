"""One candidate at one stage, as the task's judge sees it (kubevolve.sdk.judging.Candidate): requests to a
fresh confined process the slot's zygote started, replies read with limits, its log's tail, and how it ended
(a limit, a crash, the disk quota, the deadline)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubevolve.loop.engineer.candidate_main import SETUP_FAILED
from kubevolve.loop.engineer.disk_quota import MAX_SCRATCH_ENTRIES, QUOTA_POLL, candidate_usage
from kubevolve.loop.engineer.judge_slot import JudgeSlot, spawn_params
from kubevolve.loop.engineer.slot_uids import uid_entries
from kubevolve.loop.engineer.zygote_handle import ZygoteBroken
from kubevolve.sdk import channel
from kubevolve.sdk.judging import CandidateCrashed, CandidateError

LOG_TAIL_BYTES = 4000


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

    def drain_log(self) -> None:
        """Add what it printed so far to `log` (the engine's reply carries the tail)."""
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
                used, entries = candidate_usage(self._quota_roots(), shared, uid)
                if used > limit or entries > MAX_SCRATCH_ENTRIES:
                    self._over_quota.set()
                    self.slot.kill_candidate_processes()
                    return

        threading.Thread(target=watch, daemon=True).start()
