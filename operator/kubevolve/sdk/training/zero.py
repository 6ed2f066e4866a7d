"""The DeepSpeed config of a run: the task's ZeRO section, completed with batch sizes and precision.

A task writes only what it decides (the ZeRO stage, offloading, clipping) in the `deepspeed` section of its
`training.yaml`; the harness fills in what depends on the run: the micro-batch per GPU, gradient
accumulation, and `"auto"` precision (bf16 on GPUs that have it, full fp32 on the CPU).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

DEFAULT_SECTION: dict[str, Any] = {"zero_optimization": {"stage": 2}}


def deepspeed_config(
    section: dict[str, Any] | None,
    *,
    micro_batch: int,
    device: torch.device,
    grad_accum: int = 1,
    grad_clip: float | None = None,
) -> dict[str, Any]:
    config = copy.deepcopy(section if section is not None else DEFAULT_SECTION)
    zero = config.setdefault("zero_optimization", {"stage": 0})
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"deepspeed.zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    if micro_batch < 1 or grad_accum < 1:
        raise ValueError(f"micro_batch ({micro_batch}) and grad_accum ({grad_accum}) must be at least 1")
    config["train_micro_batch_size_per_gpu"] = micro_batch
    config["gradient_accumulation_steps"] = grad_accum
    config.pop("train_batch_size", None)  # DeepSpeed derives it from the two above and the world size
    if grad_clip is not None:
        config.setdefault("gradient_clipping", grad_clip)
    for precision in ("bf16", "fp16"):
        section_ = config.get(precision)
        if isinstance(section_, dict) and section_.get("enabled") == "auto":
            section_["enabled"] = _precision_available(precision, device)
    config.setdefault("steps_per_print", 10**9)  # the harness's curve is the log; keep DeepSpeed quiet
    config.setdefault("wall_clock_breakdown", False)
    return config


def _precision_available(precision: str, device: torch.device) -> bool:
    if device.type != "cuda":
        return False  # half precision on the CPU is slower than fp32 and not what a CPU run is for
    return torch.cuda.is_bf16_supported() if precision == "bf16" else True
