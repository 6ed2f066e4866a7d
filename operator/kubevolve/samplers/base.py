"""The sampler interface: choose parents and inspirations from what the run has learned so far.

A sampler's state is derived from the run's nodes alone, so it can be rebuilt at any time by replaying them
(`observe` every stored node in `seq` order): that is how a resumed run, or a proposal pod on Kubernetes,
gets the same sampler as the process that was interrupted.

Live, a selection counts as a visit of its parents at once (`select`), so that proposals made ahead of need
do not all pile onto the same parent; `observe` of the resulting child turns that in-flight visit into a
committed one, and `cancel` gives it back when the proposal is dropped.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..models import Node, Stage
from ..spec import FeatureAxis, SamplerSpec


@dataclass
class Selection:
    parents: list[Node]
    inspirations: list[Node]
    island: int = 0
    # parent ids whose in-flight visit this selection holds (see cancel)
    held: list[str] = field(default_factory=list)


def feature_value(node: Node, axis: FeatureAxis) -> float | None:
    """A node's coordinate on one feature axis: `score`, `code_length`, or a metric by name."""
    if axis.name == "score":
        return node.score
    if axis.name == "code_length":
        return float(len(node.code))
    return node.metrics.get(axis.name)


class Sampler(ABC):
    def __init__(self, spec: SamplerSpec, features: list[FeatureAxis], rng: random.Random):
        self.spec = spec
        self.features = features
        self.rng = rng

    @abstractmethod
    def observe(self, node: Node) -> None:
        """Account for a committed node (any stage). Called once per node, in `seq` order."""

    @abstractmethod
    def select(self) -> Selection | None:
        """Choose parents and inspirations; None while no node is evaluated."""

    @abstractmethod
    def cancel(self, selection: Selection) -> None:
        """A selection was dropped before it produced a node: release its in-flight visits."""

    def island_for_child(self, selection: Selection) -> int:
        return selection.island


def is_candidate(node: Node) -> bool:
    return node.stage is Stage.EVALUATED and node.score is not None
