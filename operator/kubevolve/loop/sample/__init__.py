"""Samplers choose the parents and inspirations of the next candidate; `make_sampler` builds one from a spec."""

from __future__ import annotations

import random

from kubevolve.core.spec import FeatureAxis, RunSpec, SamplerSpec
from kubevolve.core.task import Task
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


def sampler_settings(spec: RunSpec, task: Task) -> tuple[SamplerSpec, list[FeatureAxis]]:
    """The run's sampler (else the task's) and its feature axes (else the task's, else code length)."""
    sampler = spec.sampler or task.spec.sampler
    features = sampler.features or task.spec.sampler.features
    return sampler, features or [FeatureAxis(name="code_length", min=0, max=20_000, bins=10)]


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
    "sampler_settings",
]
