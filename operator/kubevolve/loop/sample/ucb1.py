"""UCB1 over the best nodes: exploit high scores, but keep trying parents that have few children yet.

A parent's value is its score, min-max normalised over the pool, plus
`exploration * sqrt(ln(total visits + 1) / (visits + 1))`, where a node's visits are its committed children
plus the selections in flight that hold it: proposals made ahead of need thus spread over several parents.
The pool is the best `archive_size` candidates, so one selection costs O(archive_size) whatever the run size.
"""

from __future__ import annotations

import heapq
import math
import random

from kubevolve.core.models import Node
from kubevolve.core.spec import FeatureAxis, SamplerSpec
from kubevolve.loop.sample.base import Selection, TrackingSampler
from kubevolve.loop.sample.elite_pool import ElitePool, pick_inspirations, pool_capacity, unit_position


class UCB1Sampler(TrackingSampler):
    def __init__(self, spec: SamplerSpec, features: list[FeatureAxis], rng: random.Random):
        super().__init__(spec, features, rng)
        self.pool = ElitePool(pool_capacity(spec))

    def _add_candidate(self, node: Node, order: int) -> None:
        self.pool.add(node, order)

    def _choose(self, rng: random.Random) -> Selection | None:
        entries = self.pool.entries()
        lo = min(node.ranked_score() for node, _ in entries)
        hi = max(node.ranked_score() for node, _ in entries)
        scale, log_total, visits = self.spec.exploration, math.log(self.visits.total + 1), self.visits.visits

        def value(entry: tuple[Node, int]) -> tuple[float, int]:
            node, order = entry
            bonus = scale * math.sqrt(log_total / (visits(node.id) + 1))
            # ties go to the earlier node, so the choice does not depend on the pool's internal order
            return unit_position(node.ranked_score(), lo, hi) + bonus, -order

        parents = [node for node, _ in heapq.nlargest(self.spec.num_parents, entries, key=value)]
        taken = {p.id for p in parents}
        inspirations = pick_inspirations(self.pool.ranked(), taken, self.spec.num_inspirations, rng)
        return Selection(parents=parents, inspirations=inspirations)
