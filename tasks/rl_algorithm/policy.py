"""The policy: a small MLP that writes the answer digit by digit, conditioned on the prompt and its own
previous digits (an autoregressive policy over a 10-token vocabulary, like a tiny language model).

Input at answer position i: one-hot prompt digits, one-hot answer digits already written (positions >= i
read as "not yet"), one-hot position. Output: logits over the 10 digits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NOT_YET = 10


class DigitPolicy(nn.Module):
    def __init__(self, digits: int, hidden: int, layers: int = 2):
        super().__init__()
        self.digits = digits
        self.length = digits + 1
        width = 2 * digits * 10 + self.length * 11 + self.length
        blocks: list[nn.Module] = []
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, 10))

    def _features(self, prompt: torch.Tensor, written: torch.Tensor) -> torch.Tensor:
        """(B, 2D) prompt, (B, L) answer -> (B, L, features) inputs for every answer position at once."""
        batch, length = written.shape
        positions = torch.arange(length, device=written.device)
        visible = positions[None, :] < positions[:, None]  # [i, j]: digit j is visible at position i
        seen = torch.where(visible[None], written[:, None, :], torch.full_like(written[:, None, :], NOT_YET))
        p = F.one_hot(prompt, 10).flatten(1).float()[:, None, :].expand(batch, length, -1)
        a = F.one_hot(seen, 11).flatten(2).float()
        q = F.one_hot(positions, length).float()[None].expand(batch, length, -1)
        return torch.cat([p, a, q], dim=-1)

    def logits(self, prompt: torch.Tensor, completion: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, 10) of every position given the completion's earlier digits."""
        return self.net(self._features(prompt, completion))

    def log_probs(self, prompt: torch.Tensor, completion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probability of each written digit (B, L), entropy of each position's distribution (B, L))."""
        logp_all = torch.log_softmax(self.logits(prompt, completion), dim=-1)
        logp = logp_all.gather(-1, completion[..., None])[..., 0]
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp, entropy

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, generator: torch.Generator | None = None, greedy: bool = False):
        """Write an answer digit by digit: sampled at temperature 1, or greedy. (B, L) int64."""
        written = torch.zeros(prompt.shape[0], self.length, dtype=torch.long, device=prompt.device)
        for i in range(self.length):
            logits = self.logits(prompt, written)[:, i]
            if greedy:
                written[:, i] = logits.argmax(-1)
            else:
                probs = torch.softmax(logits.float(), dim=-1).cpu()
                written[:, i] = torch.multinomial(probs, 1, generator=generator)[:, 0].to(prompt.device)
        return written
