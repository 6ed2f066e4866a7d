"""The process group for DeepSpeed: its environment, and `deepspeed.init_distributed` with the right backend.

DeepSpeed reads the rendezvous from MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE and LOCAL_RANK. The launchers
(`deepspeed`, `torchrun`) set them for every process they start; under `mpirun` (several nodes) the ranks
take them from OpenMPI's variables (`adopt_mpi_env`, no mpi4py needed); a single process started any other
way (an evaluation worker, a test) gets them from `single_process_env`.
The backend is nccl on GPUs and gloo on the CPU.

Ranks on several nodes share no filesystem: what the launching process wrote for them (the program, the
settings) only the ranks on its own host can read. `from_launcher_host` finds the first such rank once the
group is up and sends the files to every rank; that rank is also the one that can write the result back.

On the CPU, DeepSpeed also builds a shared-memory collective op with g++ on first use (about 45 s). It only
speeds up collectives between several ranks on one host, which gloo performs anyway, so it is skipped unless
`cpu_shm_comm` is asked for; on GPUs it is never used.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

import torch

RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")
MAX_SHARED_BYTES = 16 << 20  # what from_launcher_host sends: a program and its settings, not models or data


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def single_process_env(port: int | None = None) -> dict[str, str]:
    """Fill in a one-process rendezvous where a launcher has not: set only the variables that are missing."""
    defaults = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port or free_port()),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in RENDEZVOUS}


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


# mpirun (OpenMPI) does not set the torch names; each rank learns its place from these instead
MPI_NAMES = {
    "RANK": "OMPI_COMM_WORLD_RANK",
    "WORLD_SIZE": "OMPI_COMM_WORLD_SIZE",
    "LOCAL_RANK": "OMPI_COMM_WORLD_LOCAL_RANK",
}


def adopt_mpi_env() -> bool:
    """Under mpirun, set RANK, WORLD_SIZE and LOCAL_RANK from OpenMPI's variables (MASTER_ADDR and
    MASTER_PORT come from the launch command); True if this process was started by mpirun."""
    if MPI_NAMES["RANK"] not in os.environ:
        return False
    for name, mpi_name in MPI_NAMES.items():
        os.environ.setdefault(name, os.environ[mpi_name])
    return True


def _env(name: str, default: str) -> int:
    return int(os.environ.get(name) or os.environ.get(MPI_NAMES[name]) or default)


def rank() -> int:
    return _env("RANK", "0")


def world_size() -> int:
    return _env("WORLD_SIZE", "1")


def local_rank() -> int:
    return _env("LOCAL_RANK", "0")


def init_deepspeed(device: torch.device, *, cpu_shm_comm: bool = False) -> torch.device:
    """Join (or create) the process group; returns this rank's device (its own GPU under a launcher)."""
    import deepspeed
    import deepspeed.ops

    if not adopt_mpi_env() and "WORLD_SIZE" not in os.environ:
        single_process_env()
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    elif not cpu_shm_comm:
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend=backend_for(device))
    return device


def from_launcher_host(folder: str | Path, names: Sequence[str]) -> tuple[int, dict[str, bytes]]:
    """The files `names` of `folder` as the launching process wrote them, on every rank, and the rank that sent
    them: the lowest whose filesystem holds them all (a rank on the launcher's host; rank 0 on one node).
    Collective: every rank of the joined group must call it. Files over MAX_SHARED_BYTES in all are refused."""
    folder = Path(folder)
    sees = all((folder / name).is_file() for name in names)
    seen: list[bool] = [False] * world_size()
    torch.distributed.all_gather_object(seen, sees)
    if not any(seen):
        raise RuntimeError(
            f"no rank can read {', '.join(names)} in {folder}: the launching process writes them on its own "
            "host, where at least one rank must run (its host must be in the hostfile)"
        )
    home = seen.index(True)
    payload: list[object] = [None]
    if rank() == home:
        files = {name: (folder / name).read_bytes() for name in names}
        size = sum(map(len, files.values()))
        # a refusal is sent as such, so that every rank stops with it instead of waiting for the files
        payload = [files if size <= MAX_SHARED_BYTES else f"{size} bytes, over {MAX_SHARED_BYTES}"]
    torch.distributed.broadcast_object_list(payload, src=home)
    if not isinstance(payload[0], dict):
        raise RuntimeError(f"the files a launch shares with its ranks are too large: {payload[0]}")
    return home, payload[0]


def shutdown() -> None:
    """Leave the process group (a no-op when there is none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
