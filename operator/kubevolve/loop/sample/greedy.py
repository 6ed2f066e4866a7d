"""Greedy: always build on the best nodes found so far (ties: the earliest). The baseline that MAP-Elites and
UCB1 must beat: it converges fast and gets stuck on the first local optimum it finds.
"""

from __future__ import annotations

import random

from kubevolve.core.models import Node
from kubevolve.core.spec import FeatureAxis, SamplerSpec
from kubevolve.loop.sample.base import Selection, TrackingSampler
from kubevolve.loop.sample.elite_pool import ElitePool, pool_capacity


class GreedySampler(TrackingSampler):
    def __init__(self, spec: SamplerSpec, features: list[FeatureAxis], rng: random.Random):
        super().__init__(spec, features, rng)
        self.pool = ElitePool(pool_capacity(spec))

    def _add_candidate(self, node: Node, order: int) -> None:
        self.pool.add(node, order)

    def _choose(self, rng: random.Random) -> Selection | None:
        ranked = self.pool.ranked(self.spec.num_parents + self.spec.num_inspirations)
        parents = ranked[: self.spec.num_parents]
        return Selection(parents=parents, inspirations=ranked[len(parents) :])
