"""Smoke test of the trainer image: torch and DeepSpeed import, a matmul on the device, and one DeepSpeed
(ZeRO-2) training step through kubevolve.sdk.training, the path the tasks' evaluators take.

    python /opt/kubevolve/smoke.py --device cpu     # any machine (tests/deploy/test_images.py runs it)
    python /opt/kubevolve/smoke.py --device cuda    # a GPU node: also nvidia-smi; images/trainer/gpu-smoke.sh

Prints one JSON line of what it found and exits non-zero at the first check that fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    device_name = parser.parse_args().device
    report: dict[str, object] = {"device": device_name}

    if device_name == "cuda":
        smi = shutil.which("nvidia-smi")
        if smi is None:
            sys.exit(
                "nvidia-smi is not in the container: is the NVIDIA container toolkit mounting the driver?"
            )
        query = [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        report["nvidia_smi"] = subprocess.run(
            query, check=True, capture_output=True, text=True
        ).stdout.strip()

    import deepspeed
    import torch

    from kubevolve.sdk.training.deepspeed_stepper import deepspeed_stepper
    from kubevolve.sdk.training.distributed import init_deepspeed, shutdown
    from kubevolve.sdk.training.zero import deepspeed_config

    report |= {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "deepspeed": deepspeed.__version__,
    }
    if device_name == "cuda" and not torch.cuda.is_available():
        sys.exit(f"torch {torch.__version__} sees no GPU (CUDA build {torch.version.cuda})")
    device = torch.device(device_name)

    torch.manual_seed(0)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    product = (a.to(device) @ b.to(device)).cpu()
    error = (product - a @ b).abs().max().item()
    if error > 1e-2:  # TF32 on the GPU is allowed its rounding, not a wrong answer
        sys.exit(f"matmul on {device} differs from the CPU's by {error}")
    report["matmul_max_error"] = error
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)

    device = init_deepspeed(device)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    config = deepspeed_config({"zero_optimization": {"stage": 2}}, micro_batch=16, device=device)
    stepper = deepspeed_stepper(model, optimizer, config)
    x, y = torch.randn(16, 32, device=device), torch.randn(16, 1, device=device)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.mse_loss(stepper.model(x), y)
    report["grad_norm"] = stepper.step(loss)
    if all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True)):
        sys.exit("the DeepSpeed step changed no parameter")
    report["loss"] = loss.item()
    shutdown()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
