"""The GRPO-style loop around the evolved objective, for one seed, on the shared training harness.

1. Warm start (frozen, the "pretrained model"): supervised training on correct answers for a short budget,
   which leaves a policy that adds well without carries and poorly with them (about 30% solved).
2. RL for a fixed budget of iterations. Each iteration samples `groupSize` answers for each of `prompts`
   fresh problems, scores them with the verifiable reward, asks the candidate's `compute_advantages(rewards)`
   for advantages, records the sampling policy's log-probabilities (old) and the warm-start policy's (ref),
   then takes `updateEpochs` optimizer steps on the candidate's `policy_loss(batch)`.
3. The policy's weights are the result: after the warm start, at every evaluation point, at the end. The
   judge (evaluate.py) loads them into a policy of its own and measures the held-out solve rate (greedy
   decoding, on problems only it knows) itself: `train_seed` runs in the candidate's sandbox,
   `policy_from_weights`, `solve_rate` and `carry_rate` in the judge.

Everything the candidate returns is checked: advantages must be a finite (prompts, group) tensor, the loss a
finite scalar that carries a gradient. A violation raises with a message that names it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import arithmetic
import torch
import torch.nn.functional as F
from policy import DigitPolicy

from kubevolve.sdk.training import Budget, StepOutput, TorchStepper, seed_everything, train


@dataclass
class Rollouts:
    """What `policy_loss(batch)` receives. B = prompts * group (rows grouped by prompt), T = answer digits."""

    rewards: torch.Tensor  # (P, G) verifiable rewards, 1.0 or 0.0
    advantages: torch.Tensor  # (B,) from compute_advantages, flattened
    logp: torch.Tensor  # (B, T) log-probabilities of the sampled digits under the current policy (grad)
    old_logp: torch.Tensor  # (B, T) under the policy that sampled them
    ref_logp: torch.Tensor  # (B, T) under the warm-start (reference) policy
    entropy: torch.Tensor  # (B, T) entropy of the current policy at each position (grad)
    mask: torch.Tensor  # (B, T) 1.0 for real tokens (all here: answers have a fixed length)
    epoch: int  # update epoch on this batch, 0 .. updateEpochs - 1
    progress: float  # fraction of the RL budget done, 0 .. 1


class ObjectiveError(ValueError):
    pass


def warm_start(policy: DigitPolicy, cfg: dict[str, Any], generator: torch.Generator) -> None:
    """Supervised warm start on correct answers (the same for every candidate at a given seed)."""
    digits = cfg["digits"]
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg["warmStart"]["lr"])
    stepper = TorchStepper(policy, optimizer)
    batch = cfg["warmStart"]["batch"]

    def step_fn(step: int) -> StepOutput:
        problems = arithmetic.sample_problems(batch, digits, generator)
        prompt, target = arithmetic.prompts(problems, digits), arithmetic.answers(problems, digits)
        logits = policy.logits(prompt, target)
        return StepOutput(F.cross_entropy(logits.reshape(-1, 10), target.reshape(-1)), tokens=target.numel())

    train(stepper, step_fn, Budget(cfg["warmStart"]["steps"]))


def solve_rate(policy: DigitPolicy, problems: torch.Tensor, digits: int) -> float:
    completions = policy.generate(arithmetic.prompts(problems, digits), greedy=True)
    return float(arithmetic.reward(completions, problems, digits).mean())


def weights_of(policy: DigitPolicy) -> dict[str, Any]:
    """The policy's parameters as numpy arrays: what crosses from the sandbox to the judge."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in policy.state_dict().items()}


def policy_from_weights(weights: Any, cfg: dict[str, Any]) -> DigitPolicy:
    """A fresh policy of the stage's shape with `weights` (from the sandbox), checked name by name."""
    policy = DigitPolicy(cfg["digits"], cfg["hidden"])
    expected = policy.state_dict()
    if not isinstance(weights, dict) or set(weights) != set(expected):
        names = sorted(weights) if isinstance(weights, dict) else type(weights).__name__
        raise ValueError(f"the policy's weights must be exactly {sorted(expected)}, got {names}")
    state = {}
    for name, tensor in expected.items():
        value = torch.as_tensor(weights[name], dtype=torch.float32)
        if value.shape != tensor.shape:
            raise ValueError(f"weight {name} has shape {tuple(value.shape)}, expected {tuple(tensor.shape)}")
        if not torch.isfinite(value).all():
            raise ValueError(f"weight {name} is not finite")
        state[name] = value
    policy.load_state_dict(state)
    return policy.eval()


def carry_rate(policy: DigitPolicy, problems: torch.Tensor, digits: int) -> float:
    """The solve rate on the problems that need a carry (the warm start's weakness)."""
    carries = arithmetic.needs_carry(problems, digits)
    completions = policy.generate(arithmetic.prompts(problems, digits), greedy=True)
    solved = arithmetic.reward(completions, problems, digits)
    return float(solved[carries].mean()) if carries.any() else solve_rate(policy, problems, digits)


def train_seed(program: Any, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """Warm start and RL with the candidate's objective, for one seed: the weights along the way (after the
    warm start, at each evaluation point, at the end) and the training curve's text."""
    digits, group, count = cfg["digits"], cfg["groupSize"], cfg["prompts"]
    epochs, iterations = cfg["updateEpochs"], cfg["iterations"]
    generator = seed_everything(seed)
    policy = DigitPolicy(digits, cfg["hidden"])
    warm_start(policy, cfg, generator)
    start = weights_of(policy)
    reference = copy.deepcopy(policy).requires_grad_(False)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg["lr"])
    stepper = TorchStepper(policy, optimizer, grad_clip=cfg.get("gradClip"))
    state: dict[str, Any] = {}
    checkpoints: list[dict[str, Any]] = []

    def sample(step: int) -> None:
        problems = arithmetic.sample_problems(count, digits, generator)
        prompt = arithmetic.prompts(problems, digits).repeat_interleave(group, dim=0)
        completion = policy.generate(prompt, generator)
        rewards = arithmetic.reward(completion, problems.repeat_interleave(group, dim=0), digits).view(
            count, group
        )
        advantages = program.compute_advantages(rewards.clone())
        check_advantages(advantages, rewards.shape)
        with torch.no_grad():
            old_logp, _ = policy.log_probs(prompt, completion)
            ref_logp, _ = reference.log_probs(prompt, completion)
        state.update(
            prompt=prompt,
            completion=completion,
            rewards=rewards,
            advantages=advantages.detach().reshape(-1).float(),
            old_logp=old_logp,
            ref_logp=ref_logp,
            progress=step / (epochs * iterations),
        )

    def step_fn(step: int) -> StepOutput:
        fresh = step % epochs == 0
        if fresh:
            sample(step)
        logp, entropy = policy.log_probs(state["prompt"], state["completion"])
        batch = Rollouts(
            rewards=state["rewards"],
            advantages=state["advantages"],
            logp=logp,
            old_logp=state["old_logp"],
            ref_logp=state["ref_logp"],
            entropy=entropy,
            mask=torch.ones_like(logp),
            epoch=step % epochs,
            progress=state["progress"],
        )
        loss = program.policy_loss(batch)
        check_loss(loss)
        tokens = state["completion"].numel() if fresh else 0
        logs = {"reward": float(state["rewards"].mean()), "entropy": float(entropy.detach().mean())}
        return StepOutput(loss, tokens=tokens, logs=logs)

    def checkpoint() -> dict[str, float]:
        checkpoints.append(weights_of(policy))
        return {}

    result = train(
        stepper,
        step_fn,
        Budget(epochs * iterations, eval_every=epochs * cfg["evalEvery"]),
        evaluate=checkpoint,
        log_every=epochs * max(1, iterations // 40),
    )
    return {
        "start": start,
        "checkpoints": checkpoints,
        "final": weights_of(policy),
        "curve": result.curve.to_text(
            f"seed {seed}: RL training (loss, reward, entropy, as the runner reports)"
        ),
    }


def check_advantages(advantages: Any, shape: torch.Size) -> None:
    if not isinstance(advantages, torch.Tensor):
        raise ObjectiveError(f"compute_advantages must return a tensor, got {type(advantages).__name__}")
    if advantages.shape != shape:
        raise ObjectiveError(
            f"compute_advantages returned shape {tuple(advantages.shape)}, expected {tuple(shape)}"
        )
    if not torch.isfinite(advantages).all():
        raise ObjectiveError("compute_advantages returned non-finite advantages (NaN or infinity)")


def check_loss(loss: Any) -> None:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ObjectiveError(f"policy_loss must return a scalar tensor, got {shape}")
    if not loss.requires_grad:
        raise ObjectiveError(
            "policy_loss returned a loss without a gradient (it does not depend on batch.logp)"
        )


def curve_auc(rates: list[float]) -> float:
    """Mean solve rate over the evaluation points: sample efficiency, not just the end point."""
    return sum(rates) / len(rates) if rates else 0.0
