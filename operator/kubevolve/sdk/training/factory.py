"""One switch between the plain torch path and the DeepSpeed path, so a task's code is the same for both."""

from __future__ import annotations

from typing import Any, Literal

import torch

from kubevolve.sdk.training.device import select_device
from kubevolve.sdk.training.steppers import Stepper, TorchStepper

Engine = Literal["torch", "deepspeed"]


def training_device(engine: Engine, preferred: str | None = None) -> torch.device:
    """The device to put the model on: `select_device(preferred)`, and for DeepSpeed this rank's device once
    the process group is joined (under a launcher, rank r of a node trains on cuda:r)."""
    device = select_device(preferred)
    if engine == "deepspeed":
        from kubevolve.sdk.training.distributed import init_deepspeed

        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return init_deepspeed(device)
        if device.type == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
    return device


def build_stepper(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    engine: Engine,
    device: torch.device,
    micro_batch: int,
    scheduler: Any | None = None,
    grad_clip: float | None = None,
    deepspeed_section: dict[str, Any] | None = None,
) -> Stepper:
    """A `TorchStepper`, or a `DeepSpeedStepper` configured from the task's `deepspeed` section. `model` must
    already be on `device`, from `training_device` (which joins the process group DeepSpeed needs)."""
    if engine == "torch":
        return TorchStepper(model, optimizer, scheduler=scheduler, grad_clip=grad_clip, device=device)
    if engine == "deepspeed":
        from kubevolve.sdk.training.deepspeed_stepper import deepspeed_stepper
        from kubevolve.sdk.training.zero import deepspeed_config

        config = deepspeed_config(
            deepspeed_section, micro_batch=micro_batch, device=device, grad_clip=grad_clip
        )
        return deepspeed_stepper(model, optimizer, config, scheduler=scheduler)
    raise ValueError(f"unknown training engine {engine!r} (expected 'torch' or 'deepspeed')")
