"""The learning-rate schedule the tasks share: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math

import torch


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.1, floor: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiply the base learning rate by a factor rising linearly from 1/warmup to 1 over the warmup steps,
    then falling along a cosine to `floor` at `total_steps`."""
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
