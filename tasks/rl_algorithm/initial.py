"""RL algorithm: evolve the policy-optimisation objective of a GRPO-style loop.

A small autoregressive policy, warm-started by supervised training, learns multi-digit addition from a
verifiable reward (1.0 for an exactly right answer, else 0.0). Each iteration samples a group of answers per
problem; the evaluator calls `compute_advantages(rewards)` on the (prompts, group) rewards and then, for each
update epoch, `policy_loss(batch)` on a `Rollouts` batch (see the task's rl_loop.py):

    batch.rewards (P, G)   batch.advantages (B,)   batch.logp / old_logp / ref_logp / entropy / mask (B, T)
    batch.epoch (int)      batch.progress (0..1, fraction of the RL budget done)

with B = P * G rows grouped by problem and T answer digits. `logp` and `entropy` carry the gradient. The
score is the held-out solve rate after a fixed number of samples, averaged over seeds.

The starting objective is GRPO (Shao et al., 2024): group-normalised advantages and the PPO clipped
surrogate, averaged over each answer's tokens, then over answers.
"""

from __future__ import annotations

import torch


def group_mean(rewards: torch.Tensor) -> torch.Tensor:
    """(P, G) -> (P, 1): each problem's mean reward."""
    return rewards.mean(dim=1, keepdim=True)


def group_std(rewards: torch.Tensor) -> torch.Tensor:
    """(P, G) -> (P, 1): each problem's reward standard deviation (unbiased)."""
    return rewards.std(dim=1, keepdim=True)


def leave_one_out_mean(rewards: torch.Tensor) -> torch.Tensor:
    """(P, G) -> (P, G): for each sample, the mean reward of the other samples of its group (RLOO)."""
    group = rewards.shape[1]
    return (rewards.sum(dim=1, keepdim=True) - rewards) / max(1, group - 1)


def per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) sequence advantages -> (B, T), broadcast over each answer's tokens."""
    return advantages[:, None].expand_as(like)


def sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B,): mean over each answer's real tokens."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) -> scalar: mean over all real tokens of the batch (DAPO's token-level average)."""
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(current || reference) per token: exp(ref - logp) - (ref - logp) - 1 >= 0."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


# EVOLVE-BLOCK-START
CLIP_LOW = 0.2  # PPO clip range below a ratio of 1
CLIP_HIGH = 0.2  # and above it (DAPO's "clip-higher" raises this one)
STD_EPS = 1e-6  # added to the group's standard deviation before dividing
KL_COEF = 0.0  # weight of the KL penalty to the warm-start policy
ENTROPY_COEF = 0.0  # weight of an entropy bonus


def compute_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """GRPO: each reward relative to its group, divided by the group's standard deviation. (P, G) -> (P, G)."""
    return (rewards - group_mean(rewards)) / (group_std(rewards) + STD_EPS)


def policy_loss(batch) -> torch.Tensor:
    """The PPO clipped surrogate with a sequence-level advantage, averaged per answer then over answers."""
    ratio = torch.exp(batch.logp - batch.old_logp)
    advantage = per_token(batch.advantages, batch.logp)
    clipped = torch.clamp(ratio, 1.0 - CLIP_LOW, 1.0 + CLIP_HIGH)
    surrogate = torch.minimum(ratio * advantage, clipped * advantage)
    penalty = KL_COEF * kl_k3(batch.logp, batch.ref_logp) - ENTROPY_COEF * batch.entropy
    return sequence_mean(penalty - surrogate, batch.mask).mean()


# EVOLVE-BLOCK-END
