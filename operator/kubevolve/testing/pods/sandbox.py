"""The pod's sandbox: the namespaces its containers share, held by one bubblewrap process as the pause
container holds them."""

from __future__ import annotations

import json
import os
import subprocess

from kubevolve.testing.pods.spec import PodError


class PodSandbox:
    """The pod's shared namespaces, as the pause container holds them: network (a fresh one with only
    loopback, or the host's), ipc and uts (the pod's hostname). Its containers join them with nsenter."""

    def __init__(self, proc: subprocess.Popen[bytes], pid: int):
        self._proc, self.pid = proc, pid

    @classmethod
    def start(cls, hostname: str, *, network: bool) -> PodSandbox:
        read, write = os.pipe()
        argv = ["bwrap", "--unshare-ipc", "--unshare-uts", *([] if network else ["--unshare-net"])]
        argv += ["--hostname", hostname, "--die-with-parent", "--ro-bind", "/", "/"]
        argv += ["--info-fd", str(write), "--", "sleep", "infinity"]
        try:
            proc = subprocess.Popen(argv, pass_fds=(write,), stderr=subprocess.PIPE)
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        with os.fdopen(read, "rb") as info:
            data = info.read()  # bwrap writes its JSON and closes the fd (or exits, having failed)
        try:
            return cls(proc, int(json.loads(data)["child-pid"]))
        except (ValueError, KeyError):
            proc.kill()
            _, err = proc.communicate()
            raise PodError(
                "CreatePodSandboxError", f"bwrap: {err.decode(errors='replace').strip()}"
            ) from None

    def enter(self) -> list[str]:
        return ["nsenter", f"--target={self.pid}", "--net", "--ipc", "--uts", "--"]

    def stop(self) -> None:
        self._proc.kill()  # its child dies with it (--die-with-parent)
        self._proc.communicate()
