"""Steppers: how one loss becomes one optimizer step. The loop only ever calls `stepper.step(loss)`.

`TorchStepper` is plain torch (CPU or one GPU). `DeepSpeedStepper` (in `deepspeed_stepper.py`) wraps a
DeepSpeed engine, whose `backward` and `step` do ZeRO's partitioned gradients and optimizer states. Both
expose `model`, the module to call in the forward pass (for DeepSpeed, the engine itself, which handles
mixed precision and ZeRO-3 parameter gathering).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Stepper(Protocol):
    model: Any  # callable like the module: model(inputs) -> outputs
    device: torch.device

    def step(self, loss: torch.Tensor) -> float:
        """Backpropagate `loss`, update the parameters; return the gradient norm (nan when unknown)."""
        ...

    def learning_rate(self) -> float: ...

    def train(self) -> None: ...

    def eval(self) -> None: ...


class TorchStepper:
    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any | None = None,
        grad_clip: float | None = None,
        device: torch.device | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.grad_clip = grad_clip
        self.device = device or next(model.parameters()).device

    def step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.grad_clip:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        else:
            grads = [p.grad.detach().norm() for p in params if p.grad is not None]
            norm = float(torch.stack(grads).norm()) if grads else 0.0
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return norm

    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()
