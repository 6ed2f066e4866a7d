"""The DeepSpeed stepper: `deepspeed.initialize` wraps the model and optimizer into an engine whose
`backward`/`step` run ZeRO (partitioned optimizer states, gradients and, at stage 3, parameters).

Call `distributed.init_deepspeed(device)` first. The engine is the forward module (`stepper.model`): it
casts inputs for mixed precision and gathers ZeRO-3 parameters.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class DeepSpeedStepper:
    def __init__(self, engine: Any):
        self.engine = engine
        self.model = engine
        self.device = torch.device(engine.device)

    def step(self, loss: torch.Tensor) -> float:
        self.engine.backward(loss)
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else math.nan

    def learning_rate(self) -> float:
        return float(self.engine.get_lr()[0])

    def train(self) -> None:
        self.engine.train()

    def eval(self) -> None:
        self.engine.eval()


def deepspeed_stepper(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    *,
    scheduler: Any | None = None,
) -> DeepSpeedStepper:
    """Wrap `model` and its (client) `optimizer` in a DeepSpeed engine configured by `config`
    (see `zero.deepspeed_config`)."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
    )
    return DeepSpeedStepper(engine)
