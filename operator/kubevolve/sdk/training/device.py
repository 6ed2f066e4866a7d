"""Where training runs: the first CUDA device when there is one, else the CPU."""

from __future__ import annotations

import torch


def select_device(preferred: str | None = None) -> torch.device:
    """`preferred` ("cpu", "cuda", "cuda:1") wins when it is usable; otherwise cuda if available, else cpu.

    Asking for cuda where there is none is an error, not a silent fallback: a full stage sized for a GPU
    would otherwise crawl on the CPU until its timeout.
    """
    if preferred:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {preferred!r} was requested but CUDA is not available here")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads: int) -> int:
    """Use `threads` CPU threads for intra-op parallelism (at least one); returns what torch now uses.

    Call it inside the evaluation (after the worker forked), never at import time: OpenMP pools created before
    a fork can deadlock the child.
    """
    torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()
