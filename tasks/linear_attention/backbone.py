"""The frozen language model around the evolved token mixer: pre-norm residual blocks of
(RMSNorm -> TokenMixer -> residual, RMSNorm -> MLP -> residual), token embeddings, no positional encoding
(order must come from the mixer, as in recurrent and linear-attention models), a final norm and a linear head.
"""

from __future__ import annotations

import torch
from torch import nn

EMBED_STD = 0.02


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, mixer: nn.Module, dim: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.mixer = mixer
        self.norm2 = RMSNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LanguageModel(nn.Module):
    def __init__(self, mixer_class: type, vocab: int, dim: int, layers: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(mixer_class(dim, heads), dim, mlp_ratio) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        nn.init.normal_(self.embed.weight, std=EMBED_STD)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def mixer_parameters(self) -> int:
        return sum(p.numel() for block in self.blocks for p in block.mixer.parameters())
