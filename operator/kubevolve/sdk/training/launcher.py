"""Several GPUs or nodes: the command that starts one process per GPU, and the result one of them writes.

`launch_command` builds a `deepspeed`, `torchrun` or `mpirun` command line around an entry point: a script
and its arguments, or `-m module`. Each sets (or, for mpirun, lets `distributed` derive) the rendezvous
variables that `distributed.init_deepspeed` reads. `run_launched` runs it and reads the JSON result that a rank
on this host wrote, naming the failure when there is none.

Several nodes: the operator emits such an evaluation as a Kubeflow Trainer TrainJob on an MPI runtime, whose
launcher pod runs the step once, with `/etc/mpi/hostfile` listing the nodes and ssh set up between them.
`node_layout` reads that (and KUBEVOLVE_NUM_NODES, which the operator sets), and `mpirun` starts the ranks on
every node with the rendezvous address (the first host's) passed along. The pods share no filesystem and the
first host is a node pod, not the launcher: the ranks take what the launching process wrote from a rank on its
host (`distributed.from_launcher_host`), which also writes the result. OpenMPI itself is tested on one host
(the hostfile naming localhost), the layout with two emulated hosts; not run on a real Trainer installation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Launcher = Literal["deepspeed", "torchrun", "mpirun"]
MPI_HOSTFILE = "/etc/mpi/hostfile"  # where Kubeflow Trainer's MPI runtimes put it in the launcher pod


@dataclass(frozen=True)
class NodeLayout:
    """The nodes one evaluation spans: their number, the hostfile naming them, the first host's address."""

    nodes: int = 1
    hostfile: str | None = None
    master_addr: str = "127.0.0.1"


def read_hostfile(path: str | Path) -> list[str]:
    """The hosts of an MPI / DeepSpeed hostfile (`host slots=N` per line; blank lines and # comments skipped)."""
    hosts = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            hosts.append(line.split()[0])
    return hosts


def node_layout(env: Mapping[str, str] | None = None) -> NodeLayout:
    """One node, unless KUBEVOLVE_NUM_NODES says more; then the hostfile (KUBEVOLVE_HOSTFILE, else Trainer's
    /etc/mpi/hostfile) must list at least that many hosts, and the first is the rendezvous address."""
    env = os.environ if env is None else env
    raw = env.get("KUBEVOLVE_NUM_NODES") or "1"
    try:
        nodes = int(raw)
    except ValueError:
        raise ValueError(f"KUBEVOLVE_NUM_NODES={raw!r}: expected an integer") from None
    if nodes <= 1:
        return NodeLayout()
    path = env.get("KUBEVOLVE_HOSTFILE") or MPI_HOSTFILE
    try:
        hosts = read_hostfile(path)
    except OSError as err:
        raise ValueError(f"{nodes} nodes asked for, but the hostfile {path} cannot be read: {err}") from None
    if len(hosts) < nodes:
        raise ValueError(f"{nodes} nodes asked for, but the hostfile {path} lists {len(hosts)}: {hosts}")
    return NodeLayout(nodes, path, hosts[0])


def launch_command(
    entry: list[str],
    *,
    gpus: int,
    launcher: Launcher = "deepspeed",
    nodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    hostfile: str | None = None,
    module: bool = False,
    python: str = sys.executable,
) -> list[str]:
    """The command line that runs `entry` (a script path and its arguments, or a module name and its
    arguments with `module=True`) once per GPU on `nodes` nodes."""
    if gpus < 1 or nodes < 1:
        raise ValueError(f"gpus ({gpus}) and nodes ({nodes}) must be at least 1")
    if not entry:
        raise ValueError("entry must name a script or a module")
    if launcher == "deepspeed":
        command = [python, "-m", "deepspeed.launcher.runner", "--num_gpus", str(gpus)]
        if nodes > 1:
            if not hostfile:
                raise ValueError(
                    "a multi-node deepspeed launch needs a hostfile (one 'host slots=N' per node)"
                )
            command += ["--num_nodes", str(nodes), "--hostfile", hostfile, "--master_addr", master_addr]
        command += ["--master_port", str(master_port)]
        if module:
            command.append("--module")
        return command + entry
    if launcher == "torchrun":
        command = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus)]
        command += ["--nnodes", str(nodes), "--node_rank", str(node_rank)]
        command += ["--master_addr", master_addr, "--master_port", str(master_port)]
        if module:
            command.append("--module")
        return command + entry
    if launcher == "mpirun":
        if not hostfile:
            raise ValueError("an mpirun launch needs a hostfile (one 'host slots=N' per node)")
        command = ["mpirun", "-n", str(gpus * nodes), "--hostfile", hostfile, "--map-by", f"ppr:{gpus}:node"]
        rendezvous = {"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)}
        for name in ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", *rendezvous):  # what each rank's python needs
            command += ["-x", f"{name}={rendezvous[name]}" if name in rendezvous else name]
        return [*command, python, "-u", *(["-m"] if module else []), *entry]
    raise ValueError(f"unknown launcher {launcher!r} (expected 'deepspeed', 'torchrun' or 'mpirun')")


def run_launched(
    command: list[str],
    result_path: str | Path,
    *,
    timeout: float | None = None,
    cwd: str | Path | None = None,
) -> dict[str, Any]:
    """Run a launch command; return the JSON object its ranks wrote to `result_path` (on this host)."""
    result_path = Path(result_path)
    result_path.unlink(missing_ok=True)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise RuntimeError(f"the launched training failed with exit status {proc.returncode}:\n{tail}")
    if not result_path.is_file():
        raise RuntimeError(
            f"the launched training exited cleanly but no rank wrote a result to {result_path}"
        )
    return json.loads(result_path.read_text())
