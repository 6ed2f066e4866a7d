"""Multi-query associative recall (MQAR), generated on the fly.

A sequence holds N key-value pairs, then the same N keys again as queries, scattered over the rest of the
sequence between filler tokens; at each query key the model must predict the value that key was paired with.
It is the synthetic task that best predicts how well an efficient token mixer does in-context recall
(Arora et al., "Zoology", 2023), and it costs little: a model of width 64 learns it in a few hundred steps.

Token ids: 0 is the filler, keys are 1..K-1, values are K..2K-1 (K = vocab // 2). Targets are -100 (ignored)
everywhere except at query keys, where they hold the value to recall.
"""

from __future__ import annotations

import torch

IGNORE = -100
FILLER = 0


def batch(size: int, length: int, pairs: int, vocab: int, generator: torch.Generator):
    """(inputs, targets), both (size, length) int64."""
    half = vocab // 2
    if pairs >= half or 4 * pairs > length:
        raise ValueError(f"MQAR with {pairs} pairs needs vocab > {2 * pairs} and length >= {4 * pairs}")
    keys = torch.argsort(torch.rand(size, half - 1, generator=generator), dim=1)[:, :pairs] + 1
    values = torch.randint(half, 2 * half, (size, pairs), generator=generator)
    context = torch.stack([keys, values], dim=-1).reshape(size, 2 * pairs)
    slots = (length - 2 * pairs) // 2  # two-token query slots after the context
    chosen = torch.argsort(torch.rand(size, slots, generator=generator), dim=1)[:, :pairs]
    order = torch.argsort(torch.rand(size, pairs, generator=generator), dim=1)
    query_keys, query_values = keys.gather(1, order), values.gather(1, order)
    inputs = torch.zeros(size, length, dtype=torch.long)
    inputs[:, : 2 * pairs] = context
    targets = torch.full((size, length), IGNORE, dtype=torch.long)
    rows = torch.arange(size)[:, None]
    positions = 2 * pairs + 2 * torch.sort(chosen, dim=1).values  # query slots in increasing order
    inputs[rows, positions] = query_keys
    inputs[rows, positions + 1] = query_values
    targets[rows, positions] = query_values
    return inputs, targets


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of queries whose value is the arg-max prediction."""
    mask = targets != IGNORE
    hits = (logits.argmax(-1) == targets) & mask
    return float(hits.sum()) / max(1, int(mask.sum()))
