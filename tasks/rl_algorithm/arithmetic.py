"""Multi-digit addition with a verifiable answer: the environment of the RL task.

A problem is a pair (a, b) of D-digit numbers (leading zeros allowed); the answer a + b has D + 1 digits and
is written least significant digit first, the order in which a person adds with carries. The reward is 1.0
when every digit is right and 0.0 otherwise: it is checked, never estimated.
"""

from __future__ import annotations

import torch


def sample_problems(count: int, digits: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 2) int64 pairs, uniform over all D-digit pairs."""
    return torch.randint(0, 10**digits, (count, 2), generator=generator)


def held_out_problems(count: int, digits: int, seed: int) -> torch.Tensor:
    """A fixed evaluation set (the same for every candidate and training seed)."""
    return sample_problems(count, digits, torch.Generator().manual_seed(seed))


def to_digits(numbers: torch.Tensor, width: int) -> torch.Tensor:
    """(N,) -> (N, width) digits, least significant first."""
    powers = 10 ** torch.arange(width, device=numbers.device)
    return (numbers[:, None] // powers) % 10


def prompts(problems: torch.Tensor, digits: int) -> torch.Tensor:
    """(N, 2) pairs -> (N, 2 * D) prompt digits: a's digits, then b's, each least significant first."""
    return torch.cat([to_digits(problems[:, 0], digits), to_digits(problems[:, 1], digits)], dim=1)


def answers(problems: torch.Tensor, digits: int) -> torch.Tensor:
    """(N, 2) pairs -> (N, D + 1) answer digits, least significant first."""
    return to_digits(problems.sum(dim=1), digits + 1)


def reward(completions: torch.Tensor, problems: torch.Tensor, digits: int) -> torch.Tensor:
    """1.0 for an exactly right answer, else 0.0: (N, D + 1) completions -> (N,) float rewards."""
    return (completions == answers(problems, digits)).all(dim=1).float()


def needs_carry(problems: torch.Tensor, digits: int) -> torch.Tensor:
    """(N,) bool: does adding these numbers carry at least once (the part a warm-started policy gets wrong)."""
    a, b = to_digits(problems[:, 0], digits), to_digits(problems[:, 1], digits)
    return ((a + b) >= 10).any(dim=1)
