"""The shared training harness of the AI-for-AI tasks (architectures, learning algorithms, data).

One code path trains on a laptop CPU, one GPU, or several GPUs with DeepSpeed ZeRO:
- `device`: pick cuda when there is one, else cpu; set the CPU thread count.
- `seeding`: seed python, numpy and torch, deterministic algorithms where the backend has them.
- `budget`: a fixed step and token budget, and when to evaluate.
- `curve`: the training curve, rendered as text for the candidate's artifacts.
- `schedule`: linear warmup then cosine decay, the learning-rate schedule the tasks share.
- `loop`: `train(stepper, step_fn, budget, evaluate=...)`, the loop every task runs.
- `steppers`: `TorchStepper` (plain torch) and `DeepSpeedStepper` (a DeepSpeed engine); the loop cannot tell
  them apart, so the ZeRO path runs the same loop code as the CPU path.
- `factory`: `training_device` and `build_stepper`, the one switch between the torch and DeepSpeed paths.
- `zero`: the DeepSpeed config: the task's ZeRO section completed with batch sizes and precision.
- `distributed`: the process-group environment and `deepspeed.init_distributed` (gloo on CPU, nccl on GPU).
- `launcher`: the `deepspeed` / `torchrun` command that starts one process per GPU, and reading its result.
- `settings`: a task's per-stage training settings (`training.yaml`).

Importing this package imports torch but runs nothing and starts no threads: an evaluator that imports it at
module level stays safe to fork. DeepSpeed is imported only when its path is used.
"""

from __future__ import annotations

from kubevolve.sdk.training.curve import Curve
from kubevolve.sdk.training.device import select_device, set_threads
from kubevolve.sdk.training.factory import build_stepper, training_device
from kubevolve.sdk.training.loop import StepOutput, TrainingDiverged, TrainResult, train
from kubevolve.sdk.training.schedule import warmup_cosine
from kubevolve.sdk.training.seeding import seed_everything
from kubevolve.sdk.training.settings import SettingsError, load_settings
from kubevolve.sdk.training.step_budget import Budget
from kubevolve.sdk.training.steppers import Stepper, TorchStepper

__all__ = [
    "Budget",
    "Curve",
    "SettingsError",
    "StepOutput",
    "Stepper",
    "TorchStepper",
    "TrainResult",
    "TrainingDiverged",
    "build_stepper",
    "load_settings",
    "seed_everything",
    "select_device",
    "set_threads",
    "train",
    "training_device",
    "warmup_cosine",
]
