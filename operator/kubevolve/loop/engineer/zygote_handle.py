"""The judge's handle on its slot's zygote (zygote.py): started here, or in the pod layout accepted once from the
candidate's container; its control messages, read as what they are, the untrusted side's words."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
from typing import Any

from kubevolve.errors import KubevolveError
from kubevolve.loop.engineer.judge_config import Config

STARTUP_TIMEOUT = 300.0  # importing a runner that imports torch, on a busy machine
MAX_CONTROL = 1 << 16


class ZygoteBroken(KubevolveError, RuntimeError):
    """The zygote died or said something that is not the protocol: restart it."""


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
