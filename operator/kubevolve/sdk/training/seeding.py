"""Seeding: the same seed gives the same run (on CPU bit for bit; on GPU as far as the kernels allow)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = True) -> torch.Generator:
    """Seed python's `random`, numpy and torch (every device), and return a CPU generator for data.

    With `deterministic`, torch uses deterministic algorithms where it has them and warns where it has none
    (some CUDA kernels), instead of failing a long GPU run; cuDNN autotuning is switched off. Deterministic
    mode would also fill every fresh `torch.empty` with NaN, a debugging aid that costs seconds per step when
    DeepSpeed allocates its (hundreds of MB) communication buckets, so that part is switched off.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # a module property
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
