"""Hostile candidates for the toy task (tests/kit/toy_task.py): each one a whole program whose solve() an
honest candidate would use to return a point. The honest answer used throughout is (2.5, -1.0): f = -0.25.

They avoid imports an unprivileged uid may be unable to read on a root-owned interpreter (sandbox "none" on
a machine whose Python lives in /root): what they need is in the zygote's preloaded modules (os, sys, signal,
gc, threading, ...), or, for the static check, written as the computed import it is about.
"""

from __future__ import annotations

import textwrap

HONEST_SCORE = -0.25


def _program(prelude: str, body: str) -> str:
    prelude = textwrap.dedent(prelude).strip()
    body = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    head = (
        f"import math\n{prelude}\n\n" if prelude else "import math\n\n"
    )  # no prelude: the toy's frozen head
    return f"{head}# EVOLVE-BLOCK-START\ndef solve():\n{body}\n# EVOLVE-BLOCK-END\n"


HONEST = _program("", "return 2.5, -1.0")


def leftover_paths(mark: str) -> list[str]:
    """Where a candidate may try to leave something for the next one (relative paths: its scratch)."""
    return [
        f"/tmp/{mark}-file",
        f"/dev/shm/{mark}-file",
        f"/var/tmp/{mark}-file",
        f"/run/lock/{mark}-file",  # world-writable on Debian and Ubuntu
        f"{mark}-file",
        f"../{mark}-file",
        f"/tmp/{mark}_mod.py",
        f"{mark}_mod.py",
        f"../{mark}_mod.py",
    ]


def follower(mark: str) -> str:
    """Honest, but it looks for what a hostile predecessor left (files, a module, a running orphan): f = -0.25
    only if it finds nothing (x = 2.5 - found: 2.5 + 1 would score -0.25 too)."""
    return _program(
        "import os, sys",
        f"""
        found = sum(os.path.exists(p) for p in {leftover_paths(mark)!r})
        for pid in os.listdir("/proc"):  # an orphan a predecessor left running
            try:
                with open(f"/proc/{{pid}}/comm") as fh:
                    found += fh.read().strip() == {mark!r}
            except OSError:
                pass
        try:
            __import__({mark + "_mod"!r})
            found += 1
        except ImportError:
            pass
        return 2.5 - found, -1.0  # f = -(x - 3)^2: each thing found moves x further from 3
        """,
    )


def hostile(mark: str, port: int, key: str) -> dict[str, str]:
    """name -> program. `mark` names whatever they leave; `port` is a listener on the host's loopback; `key`
    is the fake API key in the engine's environment."""
    return {
        # the in-process attack of issue 13: reach the judge through the stack, gc and sys.modules, patch it
        "patches the judge": _program(
            "import sys, gc",
            """
            def forged(*args, **kwargs):
                return {"f": 100.0, "x": 3.0}
            for module in list(sys.modules.values()):
                for name in ("judge", "evaluate", "check_packing", "run"):
                    if callable(getattr(module, name, None)):
                        setattr(module, name, forged)
            for obj in gc.get_objects():
                if isinstance(obj, dict) and "judge" in obj:
                    obj["judge"] = forged
            frame = sys._getframe()
            while frame is not None:
                frame.f_globals.update(judge=forged, evaluate=forged)
                frame = frame.f_back
            return 2.5, -1.0
            """,
        ),
        # a well-formed result with a forged score, old format and new, on every descriptor it may hold: the
        # judge reads the new one as this request's reply, ignores the claimed f and scores the point itself
        "forges a result on every fd": _program(
            "import os, json",
            """
            for payload in (
                {"value": {"ok": True, "value": {"f": 99.0, "x": 2.5, "y": -1.0}}, "arrays": 0},
                {"ok": True, "result": {"f": 99.0}},
            ):
                data = json.dumps(payload).encode()
                frame = len(data).to_bytes(8, "little") + data
                for fd in range(1024):
                    try:
                        os.write(fd, frame)
                    except OSError:
                        pass
            return 2.5, -1.0
            """,
        ),
        # a forbidden module through a computed name, and a shell
        "imports os by a computed name and runs a shell": _program(
            "",
            f"""
            builtins = __builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)
            system = getattr(builtins["__imp" + "ort__"]("o" + "s"), "sys" + "tem")
            system("echo pwned > /tmp/{mark}-shell; echo pwned > ../{mark}-shell; id > {mark}-id")
            return 2.5, -1.0
            """,
        ),
        "signals every process it may": _program(
            "import os, signal",
            """
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                try:
                    os.kill(-1, sig)
                except OSError:
                    pass
            return 2.5, -1.0
            """,
        ),
        "leaves files and a module for the next candidate": _program(
            "import os, sys",
            f"""
            for path in {leftover_paths(mark)!r}:
                try:
                    with open(path, "w") as fh:
                        fh.write("def forged():\\n    return 100.0\\n")
                except OSError:
                    pass
            for entry in sys.path:
                try:
                    with open(os.path.join(entry or ".", "{mark}_mod.py"), "w") as fh:
                        fh.write("poisoned = True\\n")
                except OSError:
                    pass
            return 2.5, -1.0
            """,
        ),
        "starts orphans in a new session": _program(
            "import os, time",
            f"""
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    with open("/proc/self/comm", "w") as fh:
                        fh.write("{mark}")
                    time.sleep(600)
                os._exit(0)
            return 2.5, -1.0
            """,
        ),
        "reads other processes' environments": _program(
            "import os",
            f"""
            found = 0
            for pid in os.listdir("/proc"):
                for name in ("environ", "cmdline"):
                    try:
                        with open(f"/proc/{{pid}}/{{name}}", "rb") as fh:
                            found += {key!r}.encode() in fh.read()
                    except OSError:
                        pass
            return 2.5 - found, -1.0  # f = -(x - 3)^2: each thing found moves x further from 3
            """,
        ),
        "fills the disk with files under the size limit": _program(
            "",
            """
            block = b"x" * (1 << 20)
            for i in range(100_000):
                with open(f"fill-{i}", "wb") as fh:
                    fh.write(block)
            return 2.5, -1.0
            """,
        ),
        "fills the disk with files it deletes and keeps open": _program(
            "import os, time",
            """
            block, held = b"x" * (1 << 20), []
            for i in range(64):  # 64 MiB against a quota of 16, no file over the 4 MiB limit
                fh = open(f"held-{i}", "wb")
                for _ in range(3):
                    fh.write(block)
                fh.flush()
                os.unlink(f"held-{i}")  # no name left for a folder walk to find; the space stays taken
                held.append(fh)
            time.sleep(1.0)  # a few rounds of the quota watcher
            return 2.5, -1.0
            """,
        ),
        "segfaults": _program(
            "import json, sys",
            """
            sys.setrecursionlimit(1 << 30)  # no RecursionError: the C encoder recurses until the stack runs out
            nested = []
            for _ in range(1_000_000):
                nested = [nested]
            return json.dumps(nested), -1.0
            """,
        ),
        "closes every fd": _program(
            "import os",
            """
            os.closerange(0, 1 << 16)
            return 2.5, -1.0
            """,
        ),
        "starts 100,000 threads": _program(
            "import threading, time",
            """
            for _ in range(100_000):
                threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
            return 2.5, -1.0
            """,
        ),
        "connects to a loopback service": _program(
            "import socket",
            f"""
            probe = socket.socket()
            probe.settimeout(2)
            try:
                probe.connect(("127.0.0.1", {port}))  # a numeric address: no resolver, no codec to import
                return 3.0, -1.0
            except OSError:
                return 2.5, -1.0
            """,
        ),
    }
