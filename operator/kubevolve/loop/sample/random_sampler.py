"""Uniform sampling over every evaluated node: the no-selection-pressure control of an experiment."""

from __future__ import annotations

import random

from kubevolve.core.models import Node
from kubevolve.core.spec import FeatureAxis, SamplerSpec
from kubevolve.loop.sample.base import Selection, TrackingSampler


class RandomSampler(TrackingSampler):
    def __init__(self, spec: SamplerSpec, features: list[FeatureAxis], rng: random.Random):
        super().__init__(spec, features, rng)
        self.pool: list[Node] = []  # every candidate: random.sample on it costs O(picked), not O(len)

    def _add_candidate(self, node: Node, order: int) -> None:
        self.pool.append(node)

    def _choose(self, rng: random.Random) -> Selection | None:
        wanted = self.spec.num_parents + self.spec.num_inspirations
        picked = rng.sample(self.pool, min(wanted, len(self.pool)))
        parents = picked[: self.spec.num_parents]
        return Selection(parents=parents, inspirations=picked[len(parents) :])
