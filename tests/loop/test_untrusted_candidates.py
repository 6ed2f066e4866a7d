"""Candidate code is untrusted: every way it can misbehave ends as a recorded failure, and the run goes on."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
import threading
from pathlib import Path

import pytest

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import load_task
from kubevolve.loop.engineer.sandbox import bwrap_works
from kubevolve.loop.research.proposal import Proposal
from kubevolve.runtime.local import Evolution

needs_bwrap = pytest.mark.skipif(
    not bwrap_works(), reason="bubblewrap cannot create namespaces on this machine"
)


def program(body: str) -> str:
    body = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    return f"import math\n\n# EVOLVE-BLOCK-START\ndef solve():\n{body}\n# EVOLVE-BLOCK-END\n"


class ScriptedProposer:
    """Proposes the given programs in order (a test double standing in for the Researcher)."""

    name = "scripted"

    def __init__(self, programs: list[str]):
        self.programs = list(programs)

    async def propose(self, request) -> Proposal:
        return Proposal(code=self.programs.pop(0), motivation="scripted", proposer=self.name)


def run_scripted(task_dir: Path, programs: list[str], tmp_path: Path, store) -> list:
    spec = RunSpec(task=str(task_dir), name="untrusted", parallelism={"evaluators": 1, "proposers": 1})
    spec.budget.max_candidates = len(programs) + 1
    evolution = Evolution(spec, load_task(task_dir), store, ScriptedProposer(programs), tmp_path / "work")
    record = asyncio.run(evolution.run())
    assert record.phase == "Succeeded", record.message
    return store.list_nodes("untrusted")[1:]


@needs_bwrap
def test_misbehaving_candidates_are_recorded_failures(toy_task, tmp_path, store, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list = []
    listener.settimeout(0.2)

    def accept_loop():
        for _ in range(100):
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept())

    threading.Thread(target=accept_loop, daemon=True).start()
    cases = {
        "raises": ("raise RuntimeError('kaput')", "RuntimeError: kaput", FailureKind.RAISED),
        "hangs": ("while True:\n    pass", "timeout: evaluation exceeded 2s", FailureKind.TIMEOUT),
        "memory": (
            "block = bytearray(1 << 30)\nreturn 1.0, 1.0",
            "memory limit exceeded (256 MiB)",
            FailureKind.MEMORY_LIMIT,
        ),
        "forks": (
            "import os, time\nfor _ in range(200):\n    if os.fork() == 0:\n        time.sleep(30)\nreturn 1.0, 1.0",
            "process limit reached (16 processes)",
            FailureKind.PROCESS_LIMIT,
        ),
        "writes outside": (
            "open('/opt/kubevolve-escape', 'w').write('x')",
            "wrote outside its work dir",
            FailureKind.WROTE_OUTSIDE,
        ),
        "network": (  # seccomp refuses the socket itself (and its namespace's loopback has no listener)
            f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)",
            "urlopen error",
            FailureKind.NETWORK,
        ),
        "nan": ("return float('nan'), 0.0", "metric 'f' is not finite", FailureKind.BAD_METRICS),
        "big file": (
            "open('big.bin', 'wb').write(b'x' * (8 << 20))",
            "file size limit exceeded (4 MiB)",
            FailureKind.FILE_LIMIT,
        ),
        # its parent is outside its pid namespace (getppid() is 0: there is no parent to kill) or, as root,
        # another user's: the judge never notices, and the candidate is scored as if it had not tried
        "kills its parent": (
            "import os, signal\nparent = os.getppid()\ntry:\n    if parent:\n        os.kill(parent, signal.SIGKILL)\n"
            "except PermissionError:\n    pass\nreturn 2.5, -1.0",
            None,
            None,
        ),
        "forbidden import": (
            "import socket\nreturn 1.0, 1.0",
            "imports 'socket', which the task forbids",
            FailureKind.FORBIDDEN_IMPORT,
        ),
        "good": ("return 2.5, -1.0", None, None),
    }
    write_timeout = toy_task.parent / "toy2"
    from tests.kit.toy_task import write_task

    task_dir = write_task(write_timeout, timeout=2)
    nodes = run_scripted(task_dir, [program(body) for body, _, _ in cases.values()], tmp_path, store)
    by_code = {node.code: node for node in nodes}
    assert len(by_code) == len(cases)
    for name, (body, expected, kind) in cases.items():
        node = by_code[program(body)]
        assert node.failure is kind, (name, node.failure, node.error)
        if expected is None:
            assert node.stage is Stage.EVALUATED, (name, node.error)
            assert node.score == pytest.approx(-0.25)
        else:
            assert node.stage in (Stage.FAILED_QUICK, Stage.REJECTED_STATIC), name
            assert expected in node.error, (name, node.error, node.log_tail[-300:])
    assert not accepted, "a sandboxed candidate reached a server on the host's loopback"
    assert not Path("/opt/kubevolve-escape").exists()


@needs_bwrap
def test_candidate_sees_no_secrets_and_no_home(toy_task, tmp_path, store, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    secret_file = Path.home() / ".kubevolve-test-secret"
    secret_file.write_text("hunter2")
    try:
        body = f"""
        import os
        leaked = sum(1 for v in os.environ.values() if 'sk-secret-value' in v)
        home = os.path.exists({str(secret_file)!r})
        return float(leaked), float(home)
        """
        (node,) = run_scripted(toy_task, [program(body)], tmp_path, store)
    finally:
        secret_file.unlink()
    assert node.stage is Stage.EVALUATED, node.error
    assert node.metrics["x"] == 0.0  # no environment variable carried the key
    assert node.score == pytest.approx(-9.0 - 1.0)  # y = 0.0: the home folder is hidden


def test_evaluator_that_cannot_import_fails_the_run_clearly(tmp_path, store):
    from tests.kit.toy_task import write_task

    task_dir = write_task(
        tmp_path / "broken", evaluator="import no_such_module\n\ndef evaluate(p, s):\n    return {}\n"
    )
    spec = RunSpec(task=str(task_dir), name="broken")
    evolution = Evolution(spec, load_task(task_dir), store, ScriptedProposer([]), tmp_path / "work")
    with pytest.raises(Exception, match="cannot import the evaluator: ModuleNotFoundError"):
        asyncio.run(evolution.run())
    assert store.get_run("broken").phase == "Failed"


def test_without_namespaces_the_host_process_is_not_dumpable(toy_task, tmp_path):
    """Sandbox 'none' (a hardened pod): candidates share our uid, so our memory and environment (a store API
    key) must not be readable through /proc or ptrace. Checked in a subprocess: it changes the process."""
    import subprocess
    import sys

    script = f"""
import asyncio, ctypes
from pathlib import Path
from kubevolve.loop.engineer.pool import EvaluatorPool
from kubevolve.core.task import load_task
libc = ctypes.CDLL(None)
before = libc.prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
async def main():
    pool = EvaluatorPool(load_task({str(toy_task)!r}), 1, Path({str(tmp_path / "w")!r}), "none")
    await pool.start()
    await pool.close()
asyncio.run(main())
print(before, libc.prctl(3, 0, 0, 0, 0))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"]
