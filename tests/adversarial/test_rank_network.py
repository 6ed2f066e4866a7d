"""A stage's `network: ranks` (docs/tasks.md): the candidate's own processes meet over TCP, and reach nothing
else. In bubblewrap each candidate has a network namespace of its own with only a loopback device, so a
server the host runs on 127.0.0.1, or one another candidate of the same zygote listens on at the same moment,
is not there to reach; an isolated stage still gets no internet socket at all. Sandbox "none" outside the
pod layout refuses the setting before the run starts.

Both ways a zygote makes namespaces are attacked: as root (the candidate forked straight into them) and as an
unprivileged uid (a keeper in a user namespace of its own), see slots.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kubevolve.core.task import load_task
from kubevolve.loop.engineer.candidate_process import CandidateProcess
from kubevolve.loop.engineer.judge_config import Config
from kubevolve.loop.engineer.judge_slot import JudgeSlot
from kubevolve.loop.engineer.pool import EvaluatorPool, EvaluatorUnavailable, network_problem
from kubevolve.loop.engineer.sandbox import bwrap_works, worker_env
from kubevolve.loop.engineer.spawner import Spawner
from kubevolve.sdk.judging import CandidateError
from tests.adversarial.slots import judged_slot, toy_job
from tests.kit.toy_task import TOY_TASK_YAML, write_task

RANKS_YAML = TOY_TASK_YAML.format(timeout=5).replace(
    "    timeoutSeconds: 5\n", "    timeoutSeconds: 5\n    network: ranks\n"
)


@pytest.fixture(scope="module", params=["root", "unprivileged"])
def slot(request):
    with judged_slot(privileged=request.param == "root") as made:
        yield made


class HostServer:
    """A TCP server on the host's 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(0.1)
        self.accepted: list[object] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.accepted.append(self.listener.accept()[1])

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()


# a candidate that listens on 127.0.0.1:PORT in a thread and, asked again, says how many connected
LISTENER = """
import socket, threading
accepted, listening = [], []
def serve(listener):
    while True:
        accepted.append(listener.accept()[1])
def solve():
    if not listening:
        listening.append(socket.create_server(("127.0.0.1", PORT)))
        threading.Thread(target=serve, args=listening, daemon=True).start()
        return "listening", 0
    return "accepted", len(accepted)
"""

# a candidate that tries 127.0.0.1:OTHER (another candidate's server) and 127.0.0.1:HOST (the host's), then
# meets a process of its own on its loopback; io_uring stays refused
PROBER = """
import ctypes, os, socket
def attempt(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return "connected"
    except OSError as err:
        return err.errno
def solve():
    reached = {"candidate": attempt(OTHER), "host": attempt(HOST)}
    own = socket.create_server(("127.0.0.1", 0))
    port = own.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"rank 1")
        os._exit(0)
    conn, _ = own.accept()
    reached["own"] = conn.recv(16).decode()
    os.waitpid(pid, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    reached["io_uring"] = ctypes.get_errno() if libc.syscall(425, 1, None) == -1 else "set up"
    return reached, 0
"""


def _request(candidate: CandidateProcess) -> object:
    return candidate.request({})["x"]


def test_ranks_meet_on_their_own_loopback_and_reach_no_one_else(slot):
    """Two candidates of one zygote alive at once, both with `network: ranks`: the second reaches neither the
    first's server nor the host's, yet its own processes meet on its loopback."""
    slot_, _, uid = slot
    host = HostServer()
    other_port = 40000 + os.getpid() % 20000
    listener = CandidateProcess(
        slot_, toy_job(uid, LISTENER.replace("PORT", str(other_port)), network="ranks"), time.monotonic() + 30
    )
    code = PROBER.replace("OTHER", str(other_port)).replace("HOST", str(host.port))
    prober = CandidateProcess(slot_, toy_job(uid, code, network="ranks"), time.monotonic() + 30)
    try:
        assert _request(listener) == "listening"
        reached = _request(prober)
        assert _request(listener) == "accepted", "the listening candidate is gone"
        assert listener.request({})["y"] == 0, "another candidate reached the listener"
    finally:
        for candidate in (prober, listener):
            candidate.close()
        slot_.prepare_spare()
        host.close()
    assert reached == {
        "candidate": errno.ECONNREFUSED,
        "host": errno.ECONNREFUSED,
        "own": "rank 1",
        "io_uring": errno.EPERM,
    }
    assert host.accepted == []


def test_an_isolated_stage_still_gets_no_internet_socket(slot):
    slot_, _, uid = slot
    code = "import socket\ndef solve():\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n    return 0, 0\n"
    candidate = CandidateProcess(slot_, toy_job(uid, code), time.monotonic() + 30)
    try:
        with pytest.raises(CandidateError, match="Network is unreachable"):
            candidate.request({})
    finally:
        candidate.close()
        slot_.prepare_spare()


# every socket family the kernel may know (AF_UNIX=1 .. AF_MCTP=45): which the candidate could open
FAMILIES = """
import errno, socket
def solve():
    found = {}
    for family in range(1, 46):
        errors = set()
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET, socket.SOCK_RAW):
            try:
                socket.socket(family, kind).close()
                found[str(family)] = "opened"
                break
            except OSError as err:
                errors.add(errno.errorcode[err.errno])
        else:
            found[str(family)] = sorted(errors)
    return found, 0
"""


@pytest.mark.parametrize("network", ["isolated", "ranks"])
def test_no_socket_family_but_unix_netlink_and_ranks_internet_is_open(slot, network):
    """A network namespace bounds only what is in it: AF_VSOCK reaches the hypervisor (on a VM node, CID 2)
    from any namespace, and other families (CAN, TIPC, RDS, Bluetooth, ...) are the kernel's attack surface
    with nothing of the candidate's to use them for. The seccomp filter refuses them all with EAFNOSUPPORT,
    whatever the stage's network; internet sockets are the `ranks` stage's only addition."""
    slot_, _, uid = slot
    candidate = CandidateProcess(slot_, toy_job(uid, FAMILIES, network=network), time.monotonic() + 30)
    try:
        families = candidate.request({})["x"]
    finally:
        candidate.close()
        slot_.prepare_spare()
    allowed = {socket.AF_UNIX, socket.AF_NETLINK} | (
        {socket.AF_INET, socket.AF_INET6} if network == "ranks" else set()
    )
    internet = {socket.AF_INET, socket.AF_INET6}
    others = {int(f): v for f, v in families.items() if int(f) not in allowed | internet}
    assert others == {f: ["EAFNOSUPPORT"] for f in range(1, 46) if f not in allowed | internet}
    assert [families[str(f)] for f in sorted(allowed)] == ["opened"] * len(allowed)
    if network == "isolated":
        assert families[str(socket.AF_INET)] == families[str(socket.AF_INET6)] == ["ENETUNREACH"]


# two processes of the candidate, the second forked, meet through torch.distributed's TCP store and sum
# their ranks + 1 with gloo: 1 + 2
ALL_REDUCE = """
import datetime, os, socket

def solve():
    import torch
    import torch.distributed as dist
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = os.fork()
    rank = 1 if child == 0 else 0
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
            timeout=datetime.timedelta(seconds=30),
        )
        value = torch.tensor([float(rank + 1)])
        dist.all_reduce(value)
        dist.destroy_process_group()
    finally:
        if child == 0:
            os._exit(0)
    os.waitpid(child, 0)
    return float(value.item()), 0.0
"""


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_a_ranks_stage_runs_a_gloo_all_reduce_through_the_engine(tmp_path):
    """The whole way: task.yaml's `network: ranks`, the pool's job, the judge's spawn, the zygote's network
    namespace; the judge reads the sum the two ranks agreed on."""
    pytest.importorskip("torch")
    yaml_text = RANKS_YAML.replace("memoryMb: 256, maxProcesses: 16", "memoryMb: 4096, maxProcesses: 64")
    yaml_text = yaml_text.replace("timeoutSeconds: 5", "timeoutSeconds: 120")
    task = load_task(write_task(tmp_path / "toy", yaml_text=yaml_text))
    outcome = asyncio.run(_run_quick(task, ALL_REDUCE, tmp_path / "work", "bwrap"))
    assert outcome.ok, (outcome.error, outcome.log_tail)
    assert outcome.result["x"] == 3.0
    isolated = load_task(write_task(tmp_path / "iso", yaml_text=yaml_text.replace("network: ranks", "")))
    refused = asyncio.run(_run_quick(isolated, ALL_REDUCE, tmp_path / "work-iso", "bwrap"))
    assert not refused.ok and "Network is unreachable" in refused.error, refused.error


async def _run_quick(task, code: str, workspace: Path, sandbox: str):
    pool = EvaluatorPool(task, 1, workspace, sandbox)  # type: ignore[arg-type]
    await pool.start()
    try:
        async with pool.slot() as slot:
            return await slot.run_stage(task, code, "quick", task.spec.stages["quick"])
    finally:
        await pool.close()


@pytest.mark.parametrize(("network", "expected"), [("ranks", "opened"), ("isolated", "ENETUNREACH")])
def test_in_the_pod_layout_ranks_opens_internet_sockets_for_the_networkpolicy_to_bound(
    tmp_path, network, expected
):
    """The candidate container's zygote (`--connect`, no namespaces: the pod is the sandbox) takes the same
    job key; with `ranks` the seccomp filter lets the candidate open an internet socket, and what it may
    reach is the pod's NetworkPolicy's to say (runtime/kubernetes/netpol.py)."""
    task_dir = write_task(tmp_path / "toy")
    shared = tmp_path / "sandbox"
    shared.mkdir()
    path = shared / ".judge" / "zygote.sock"
    env = worker_env(1, None)
    config = Config(
        evaluator=str(task_dir / "evaluate.py"),
        task_root=str(task_dir),
        mode="none",
        zygote_argv=[],
        zygote_env=env,
        scratch_root=str(shared),
        zygote_socket=str(path),
        runner=str(task_dir / "run.py"),
        shared_root=str(shared),
    )
    command = [sys.executable, "-P", "-m", "kubevolve.loop.engineer.zygote", "--connect", str(path)]
    zygote = subprocess.Popen(command, env=env, start_new_session=True)
    slot = JudgeSlot(config)
    try:
        slot.zygote.start()
        code = (
            "import errno, socket\ndef solve():\n    try:\n        socket.socket().close()\n"
            "        return 'opened', 0\n    except OSError as err:\n        return errno.errorcode[err.errno], 0\n"
        )
        job = dict(toy_job(os.geteuid(), code, network=network), max_processes=4096)
        candidate = CandidateProcess(slot, job, time.monotonic() + 30)
        try:
            assert candidate.request({})["x"] == expected
        finally:
            candidate.close()
    finally:
        slot.reset_zygote()
        zygote.wait(timeout=30)


def test_sandbox_none_refuses_a_ranks_stage_before_the_run_starts(tmp_path):
    task = load_task(write_task(tmp_path / "toy", yaml_text=RANKS_YAML))
    pool = EvaluatorPool(task, 1, tmp_path / "work", "none")
    with pytest.raises(EvaluatorUnavailable) as raised:
        asyncio.run(pool.start())
    message = str(raised.value)
    assert "task 'toy', stage 'quick': `stages.quick.network: ranks`" in message
    assert "sandbox 'none'" in message and "host's network" in message
    assert pool.slots == [] or all(s.worker.proc is None for s in pool.slots), "a worker started"


def test_only_the_runs_stages_and_only_sandbox_none_on_a_machine_are_refused(tmp_path):
    task = load_task(write_task(tmp_path / "toy", yaml_text=RANKS_YAML))
    assert network_problem(task, None, "none", remote=False) is not None
    assert network_problem(task, ["full"], "none", remote=False) is None  # the run skips the ranks stage
    assert network_problem(task, None, "bwrap", remote=False) is None  # a namespace per candidate
    assert network_problem(task, None, "none", remote=True) is None  # the pod layout: its NetworkPolicy
    isolated = load_task(write_task(tmp_path / "iso"))
    assert network_problem(isolated, None, "none", remote=False) is None


def test_a_zygote_without_namespaces_refuses_ranks_itself():
    """The last line, should a judge ever send it: sandbox "none" outside a pod forks nothing for `ranks`."""
    pipes = [os.pipe() for _ in range(3)]
    fds = [pipes[0][0], pipes[1][1], pipes[2][1]]
    try:
        with pytest.raises(OSError, match="network 'ranks' needs a network namespace per candidate"):
            Spawner(None, "none").spawn(1, {"network": "ranks"}, fds)
    finally:
        for read, write in pipes:
            for fd in (read, write):
                with contextlib.suppress(OSError):
                    os.close(fd)
