"""The downstream model the curated data trains: a bag-of-embeddings text classifier (fastText-like), trained
for a fixed budget of sampled examples. The curation's weights decide which documents the samples are drawn
from and how often, so duplicates, junk and wrong labels cost budget and accuracy, exactly as in pretraining.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BagClassifier(nn.Module):
    def __init__(self, vocab: int, classes: int, dim: int, hidden: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, tokens: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens, offsets))


def pack(docs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Documents -> (flat token ids, start offset of each document), the EmbeddingBag input."""
    lengths = torch.tensor([len(d) for d in docs], dtype=torch.long)
    offsets = torch.zeros(len(docs), dtype=torch.long)
    offsets[1:] = lengths.cumsum(0)[:-1]
    flat = torch.tensor([t for d in docs for t in d], dtype=torch.long)
    return flat, offsets


class PackedCorpus:
    """All training documents packed once, so a batch is a cheap gather."""

    def __init__(self, docs: list[list[int]], labels: list[int]):
        self.flat, self.offsets = pack(docs)
        self.lengths = torch.tensor([len(d) for d in docs], dtype=torch.long)
        self.labels = torch.tensor(labels, dtype=torch.long)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = self.lengths[index]
        starts = self.offsets[index]
        positions = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths)
        positions = positions + torch.arange(int(lengths.sum()))
        offsets = torch.zeros(len(index), dtype=torch.long)
        offsets[1:] = lengths.cumsum(0)[:-1]
        return self.flat[positions], offsets, self.labels[index]


def accuracy(model: BagClassifier, docs: list[list[int]], labels: list[int]) -> float:
    flat, offsets = pack(docs)
    with torch.no_grad():
        predicted = model(flat, offsets).argmax(-1)
    return float((predicted == torch.tensor(labels)).float().mean())


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)
