"""A bounded pool of the best nodes seen, cheap to update: the working set of UCB1, greedy and MAP-Elites.

Ranking is by score, ties going to the earlier node (the lower observe `order`), so that a replayed sampler
ranks exactly as the live one did. Adding is O(log capacity); nothing ever scans all nodes of the run.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator

from kubevolve.core.models import Node
from kubevolve.core.spec import SamplerSpec


def pool_capacity(spec: SamplerSpec) -> int:
    """`archive_size`, but never smaller than one selection: a tiny pool would silently shrink selections."""
    return max(spec.archive_size, spec.num_parents + spec.num_inspirations)


class ElitePool:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._heap: list[tuple[float, int, str]] = []  # (score, -order, id): the worst entry on top
        self._entries: dict[str, tuple[Node, int]] = {}
        self._best: tuple[Node, int] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._entries

    def __iter__(self) -> Iterator[str]:
        """The ids of the nodes kept."""
        return iter(self._entries)

    def add(self, node: Node, order: int) -> bool:
        """Keep `node` if it is among the best `capacity`; True if it was kept."""
        if node.id in self._entries:
            return False
        assert node.score is not None
        key = (node.score, -order, node.id)
        if len(self._heap) < self.capacity:
            heapq.heappush(self._heap, key)
        elif key > self._heap[0]:
            evicted = heapq.heapreplace(self._heap, key)
            del self._entries[evicted[2]]
        else:
            return False
        self._entries[node.id] = (node, order)
        if self._best is None or (node.score, -order) > (self._best[0].score, -self._best[1]):
            self._best = (node, order)
        return True

    @property
    def best(self) -> tuple[Node, int] | None:
        """The best node and its order (never evicted: eviction takes the worst)."""
        return self._best

    def entries(self) -> list[tuple[Node, int]]:
        return list(self._entries.values())

    def nodes(self) -> list[Node]:
        return [node for node, _ in self._entries.values()]

    def ranked(self, limit: int | None = None) -> list[Node]:
        """Nodes best first (ties: earliest); only the first `limit` when given."""
        entries = self._entries.values()
        n = len(entries) if limit is None else min(limit, len(entries))
        return [node for node, _ in heapq.nsmallest(n, entries, key=_best_first)]


def unit_position(value: float, lo: float, hi: float) -> float:
    """Where `value` lies in [lo, hi], as a fraction; halved operands keep huge ranges from overflowing."""
    span = hi / 2 - lo / 2
    if not span > 0:
        return 1.0
    frac = (value / 2 - lo / 2) / span
    return frac if math.isfinite(frac) else 1.0


def pick_inspirations(ranked: list[Node], taken: set[str], count: int, rng: random.Random) -> list[Node]:
    """The best half of `count` from `ranked` (best first), the rest uniformly among the remaining ones.

    The best nodes show what works; the random ones keep the prompt from repeating the same few programs.
    `taken` (parents) is excluded and extended with every node chosen.
    """
    best_half = (count + 1) // 2
    chosen: list[Node] = []
    rest: list[Node] = []
    for node in ranked:
        if node.id in taken:
            continue
        if len(chosen) < best_half:
            chosen.append(node)
            taken.add(node.id)
        else:
            rest.append(node)
    extra = rng.sample(rest, min(count - len(chosen), len(rest)))
    taken.update(node.id for node in extra)
    return chosen + extra


def _best_first(entry: tuple[Node, int]) -> tuple[float, int]:
    """Sort key: higher score first, then the earlier entry (only scored nodes enter the pool)."""
    node, order = entry
    return (-node.score if node.score is not None else math.inf, order)
