"""Linear attention: evolve the token-mixing layer of a small language model.

`TokenMixer(dim, num_heads)` maps (batch, seq, dim) to (batch, seq, dim). It must be causal (an output never
depends on later tokens) and sub-quadratic in the sequence length; the evaluator checks both before training.
The frozen backbone around it (embeddings, pre-norm residual blocks with an MLP, no positional encoding) is in
the task's backbone.py; the frozen helpers below are verified building blocks a mixer may use.

The starting mixer is DeltaNet (Yang et al., 2024): short causal convolutions on q, k, v, L2-normalised
queries and keys, a per-head writing strength beta, and the delta rule S_t = S_{t-1} + beta_t (v_t -
S_{t-1} k_t) k_t^T computed in its chunked parallel form (WY representation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def causal_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise causal convolution over time: x (B, T, C), weight (C, K); tap K-1 is the current token."""
    taps = weight.shape[1]
    out = x * weight[:, taps - 1]
    for shift in range(1, min(taps, x.shape[1])):
        out = out + F.pad(x[:, :-shift], (0, 0, shift, 0)) * weight[:, taps - 1 - shift]
    return out


def identity_taps(channels: int, taps: int, noise: float) -> torch.Tensor:
    """Convolution weights that start near the identity (all weight on the current token)."""
    weight = torch.randn(channels, taps) * noise
    weight[:, taps - 1] += 1.0
    return weight


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, H * d) -> (B, H, T, d)."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H * d)."""
    batch, heads, length, width = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * width)


def heads_first(gate: torch.Tensor) -> torch.Tensor:
    """A per-head gate (B, T, H) -> (B, H, T)."""
    return gate.transpose(1, 2)


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + eps)


def _chunks(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """(B, H, T, ...) zero-padded to a multiple of `chunk` and cut into (B, H, T // chunk, chunk, ...)."""
    pad = (-x.shape[2]) % chunk
    if pad:
        x = torch.cat([x, x.new_zeros(*x.shape[:2], pad, *x.shape[3:])], dim=2)
    return x.view(*x.shape[:2], x.shape[2] // chunk, chunk, *x.shape[3:])


def chunked_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, eps: float = 1e-6, normalize: bool = True
) -> torch.Tensor:
    """Causal linear attention o_t = sum_{s<=t} (q_t . k_s) v_s [/ sum_{s<=t} q_t . k_s], in chunks:
    exact attention inside a chunk, a running d x d state between chunks. q, k, v: (B, H, T, d)."""
    length = q.shape[2]
    qc, kc, vc = _chunks(q, chunk), _chunks(k, chunk), _chunks(v, chunk)
    mask = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    state = q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    norm = q.new_zeros(*q.shape[:2], q.shape[-1])
    outs = []
    for i in range(qc.shape[2]):
        qi, ki, vi = qc[:, :, i], kc[:, :, i], vc[:, :, i]
        scores = (qi @ ki.transpose(-1, -2)).masked_fill(~mask, 0.0)
        out = qi @ state + scores @ vi
        if normalize:
            out = out / ((qi * norm[:, :, None]).sum(-1) + scores.sum(-1) + eps)[..., None]
        outs.append(out)
        state = state + ki.transpose(-1, -2) @ vi
        norm = norm + ki.sum(2)
    return torch.cat(outs, dim=2)[:, :, :length]


def chunked_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, chunk: int
) -> torch.Tensor:
    """The delta rule S_t = S_{t-1} + beta_t (v_t - S_{t-1} k_t) k_t^T, o_t = S_t q_t, in its chunked parallel
    form (WY representation, as in Yang et al. 2024). q, k, v: (B, H, T, d), k L2-normalised; beta (B, H, T)."""
    length = q.shape[2]
    qc, kc, vc = _chunks(q, chunk), _chunks(k, chunk), _chunks(v, chunk)
    bc = _chunks(beta[..., None], chunk)
    k_beta, v_beta = kc * bc, vc * bc
    eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
    # T = (I + tril(diag(beta) K K^T, -1))^-1, so that U = T V_beta and W = T K_beta
    lower = eye + (k_beta @ kc.transpose(-1, -2)).tril(-1)
    inverse = torch.linalg.solve_triangular(lower, eye.expand_as(lower), upper=False, unitriangular=True)
    u, w = inverse @ v_beta, inverse @ k_beta
    mask = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    state = q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    outs = []
    for i in range(qc.shape[2]):
        qi, ki = qc[:, :, i], kc[:, :, i]
        new = u[:, :, i] - w[:, :, i] @ state
        scores = (qi @ ki.transpose(-1, -2)).masked_fill(~mask, 0.0)
        outs.append(qi @ state + scores @ new)
        state = state + ki.transpose(-1, -2) @ new
    return torch.cat(outs, dim=2)[:, :, :length]


# EVOLVE-BLOCK-START
CHUNK = 32  # tokens per chunk of the parallel form (changes speed; the result only up to rounding)
CONV_TAPS = 4  # taps of the causal short convolutions on q, k and v
CONV_NOISE = 0.1  # initial deviation of the convolutions from the identity
BETA_BIAS = 0.0  # initial bias of the writing strength beta = sigmoid(W x + b)
OUT_GAIN = 1.0  # scale of the output projection's initial weights


class TokenMixer(nn.Module):
    """DeltaNet: short convolutions, SiLU, L2-normalised q and k, the chunked delta rule."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.q_conv = nn.Parameter(identity_taps(dim, CONV_TAPS, CONV_NOISE))
        self.k_conv = nn.Parameter(identity_taps(dim, CONV_TAPS, CONV_NOISE))
        self.v_conv = nn.Parameter(identity_taps(dim, CONV_TAPS, CONV_NOISE))
        self.beta_proj = nn.Linear(dim, num_heads)
        nn.init.constant_(self.beta_proj.bias, BETA_BIAS)
        self.out_proj = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.out_proj.weight.mul_(OUT_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = split_heads(F.silu(causal_conv(self.q_proj(x), self.q_conv)), self.heads)
        k = split_heads(F.silu(causal_conv(self.k_proj(x), self.k_conv)), self.heads)
        v = split_heads(F.silu(causal_conv(self.v_proj(x), self.v_conv)), self.heads)
        beta = heads_first(torch.sigmoid(self.beta_proj(x)))
        out = chunked_delta_rule(l2norm(q), l2norm(k), v, beta, CHUNK)
        return self.out_proj(merge_heads(out))


# EVOLVE-BLOCK-END
