"""The training loop every task runs: step until the budget is spent, log a curve, evaluate on the way.

A task supplies `step_fn(step) -> StepOutput` (make or fetch a batch, run the forward pass through
`stepper.model`, return the loss and the number of training tokens it covered) and optionally
`evaluate() -> {metric: value}`, which runs under `torch.no_grad()` with the model in eval mode. The loop
owns the order of things, the budget, the timing (evaluation time is not training time) and the curve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kubevolve.errors import KubevolveError
from kubevolve.sdk.training.curve import Curve
from kubevolve.sdk.training.step_budget import Budget
from kubevolve.sdk.training.steppers import Stepper


class TrainingDiverged(KubevolveError, RuntimeError):
    """The loss became NaN or infinite: the message names the step, which teaches the next proposal."""


@dataclass
class StepOutput:
    loss: torch.Tensor
    tokens: int = 0  # training tokens (or samples) this step consumed, counted against the budget
    logs: dict[str, float] = field(default_factory=dict)  # extra values for the curve (averaged per row)


@dataclass
class TrainResult:
    steps: int
    tokens: int
    train_seconds: float  # time spent in training steps, evaluation excluded
    final_loss: float  # mean training loss over the last logging interval
    curve: Curve
    final_eval: dict[str, float]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0


def train(
    stepper: Stepper,
    step_fn: Callable[[int], StepOutput],
    budget: Budget,
    *,
    evaluate: Callable[[], dict[str, float]] | None = None,
    log_every: int | None = None,
) -> TrainResult:
    log_every = log_every or max(1, budget.max_steps // 50)
    curve = Curve()
    steps = tokens = 0
    train_seconds = 0.0
    window: dict[str, list[float]] = {}
    final_loss = math.nan
    last_eval: dict[str, float] = {}
    stepper.train()
    while not budget.exhausted(steps, tokens):
        started = time.perf_counter()
        out = step_fn(steps)
        loss = float(out.loss.detach())
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training diverged: the loss is {loss} at step {steps}")
        grad_norm = stepper.step(out.loss)
        train_seconds += time.perf_counter() - started
        steps += 1
        tokens += int(out.tokens)
        for name, value in {"loss": loss, "grad_norm": grad_norm, **out.logs}.items():
            window.setdefault(name, []).append(float(value))
        done = budget.exhausted(steps, tokens)
        if steps % log_every == 0 or done:
            means = {name: sum(values) / len(values) for name, values in window.items()}
            final_loss = means["loss"]
            curve.add(steps, tokens, train_seconds, lr=stepper.learning_rate(), **means)
            window.clear()
        if evaluate is not None and (done or budget.should_eval(steps)):
            last_eval = _evaluate(stepper, evaluate)
            curve.add(steps, tokens, train_seconds, **{f"eval_{k}": v for k, v in last_eval.items()})
    return TrainResult(steps, tokens, train_seconds, final_loss, curve, last_eval)


def _evaluate(stepper: Stepper, evaluate: Callable[[], dict[str, float]]) -> dict[str, float]:
    stepper.eval()
    try:
        with torch.no_grad():
            return {name: float(value) for name, value in evaluate().items()}
    finally:
        stepper.train()
