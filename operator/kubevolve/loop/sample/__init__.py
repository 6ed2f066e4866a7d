"""Samplers choose the parents and inspirations of the next candidate; `make_sampler` builds one from a spec."""

from __future__ import annotations

import random

from kubevolve.core.spec import FeatureAxis, SamplerSpec
from kubevolve.loop.sample.base import Sampler, Selection, TrackingSampler, feature_value, is_candidate
from kubevolve.loop.sample.greedy import GreedySampler
from kubevolve.loop.sample.map_elites import MapElitesSampler
from kubevolve.loop.sample.random_sampler import RandomSampler
from kubevolve.loop.sample.ucb1 import UCB1Sampler

SAMPLERS: dict[str, type[Sampler]] = {
    "ucb1": UCB1Sampler,
    "greedy": GreedySampler,
    "random": RandomSampler,
    "map_elites": MapElitesSampler,
}


def make_sampler(spec: SamplerSpec, features: list[FeatureAxis], seed: int) -> Sampler:
    """A fresh sampler; the same spec, features and seed, fed the same calls, make the same selections."""
    return SAMPLERS[spec.kind](spec, list(features), random.Random(seed))


__all__ = [
    "SAMPLERS",
    "GreedySampler",
    "MapElitesSampler",
    "RandomSampler",
    "Sampler",
    "Selection",
    "TrackingSampler",
    "UCB1Sampler",
    "feature_value",
    "is_candidate",
    "make_sampler",
]
