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

from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import FeatureAxis, SamplerSpec
from kubevolve.loop.sample.visits import VisitLedger


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
    def select(self, draw: int = 0) -> Selection | None:
        """Choose parents and inspirations; None while no node is evaluated. `draw` (the proposal's index)
        tells apart selections that nothing else does: proposal pods started together see the same store."""

    @abstractmethod
    def cancel(self, selection: Selection) -> None:
        """A selection was dropped before it produced a node: release its in-flight visits."""

    def island_for_child(self, selection: Selection) -> int:
        return selection.island


def is_candidate(node: Node) -> bool:
    return node.stage is Stage.EVALUATED and node.score is not None


class TrackingSampler(Sampler):
    """The bookkeeping every concrete sampler shares, so each one only says how it ranks and picks.

    - visits: `select` holds a visit of each parent, `observe` of the child commits it, `cancel` releases it;
    - randomness: each `select` draws from a generator seeded by (seed, nodes observed, selections in flight,
      the caller's `draw`), a function of state rather than of call history. A sampler rebuilt by replaying the nodes therefore
      makes the same next selection as the live one whenever no selection is in flight (a cancelled
      selection leaves no trace: selecting again after it repeats it).
    """

    def __init__(self, spec: SamplerSpec, features: list[FeatureAxis], rng: random.Random):
        super().__init__(spec, features, rng)
        self.visits = VisitLedger()
        self.observed = 0  # nodes observed, any stage; a node's index in this count is its `order`
        self.candidates = 0  # evaluated nodes observed
        self._salt = rng.getrandbits(64)

    def observe(self, node: Node) -> None:
        order = self.observed
        self.observed += 1
        self.visits.commit(node.parent_ids)
        if is_candidate(node):
            self.candidates += 1
            self._add_candidate(node, order)

    def select(self, draw: int = 0) -> Selection | None:
        if not self.candidates:
            return None
        selection = self._choose(self._state_rng(draw))
        if selection is not None:
            selection.held = [p.id for p in selection.parents]
            self.visits.hold(selection.held)
        return selection

    def cancel(self, selection: Selection) -> None:
        self.visits.release(selection.held)
        selection.held = []  # a second cancel of the same selection is harmless

    def _state_rng(self, draw: int) -> random.Random:
        # a str seed is hashed with SHA-512: the same stream on every platform and Python version
        return random.Random(f"{self._salt}:{self.observed}:{self.visits.pending}:{draw}")

    @abstractmethod
    def _add_candidate(self, node: Node, order: int) -> None:
        """Take an evaluated node into the sampler's working set."""

    @abstractmethod
    def _choose(self, rng: random.Random) -> Selection | None:
        """Pick parents and inspirations (at least one candidate has been observed)."""
