"""MAP-Elites with islands: keep the best node of every feature cell, so that selection spreads over
different kinds of programs instead of collapsing onto the current best (which is how greedy gets stuck).

- Each island has a grid over the feature axes (each axis binned over [min, max] into `bins`, values outside
  clamped into the edge bins) holding the best node per cell, and an archive of its best `archive_size`
  nodes. A node missing a feature value stays out of the grid but is still in its island's archive.
- An initial node (no parents) seeds every island; a child joins its first parent's island, recorded in
  `node.island` (the engine copies it from `Selection.island`), so replay places it where it was placed live.
- `select` takes islands round-robin, one per selection, and a parent uniformly among the island's occupied
  cells; inspirations are the island's best elites and nodes of other cells.
- Ring migration: after every `migration_interval` candidates, island i receives island i-1's best node
  (the same Node, no new node is stored). It depends only on the observed node sequence, so replay rebuilds
  the same islands.
"""

from __future__ import annotations

import random

from kubevolve.core.models import Node
from kubevolve.core.spec import FeatureAxis, SamplerSpec
from kubevolve.loop.sample.base import Selection, TrackingSampler, feature_value
from kubevolve.loop.sample.elite_pool import ElitePool, pool_capacity, unit_position

Cell = tuple[int, ...]


def cell_of(node: Node, features: list[FeatureAxis]) -> Cell | None:
    """The node's grid cell, or None when it lacks a value on some axis."""
    cell = []
    for axis in features:
        value = feature_value(node, axis)
        if value is None or value != value:  # missing or NaN
            return None
        clamped = min(max(value, axis.min), axis.max)
        cell.append(min(int(unit_position(clamped, axis.min, axis.max) * axis.bins), axis.bins - 1))
    return tuple(cell)


class Island:
    """One island's memory: the best node per occupied cell, and its best nodes overall."""

    def __init__(self, capacity: int):
        self.grid: dict[Cell, Node] = {}
        self.cells: list[Cell] = []  # occupied cells in the order they filled: O(1) uniform sampling
        self.archive = ElitePool(capacity)

    def place(self, node: Node, order: int, cell: Cell | None) -> None:
        self.archive.add(node, order)
        if cell is None:
            return
        incumbent = self.grid.get(cell)
        if incumbent is None:
            self.cells.append(cell)
            self.grid[cell] = node
        elif node.ranked_score() > incumbent.ranked_score():  # ties keep the incumbent
            self.grid[cell] = node

    def __len__(self) -> int:
        return len(self.archive)


class MapElitesSampler(TrackingSampler):
    def __init__(self, spec: SamplerSpec, features: list[FeatureAxis], rng: random.Random):
        super().__init__(spec, features, rng)
        self.islands = [Island(pool_capacity(spec)) for _ in range(spec.islands)]
        self.children = 0  # observed nodes that have parents: the selections that were not cancelled
        self.migrations = 0

    def observe(self, node: Node) -> None:
        if node.parent_ids:
            self.children += 1
        super().observe(node)

    def _add_candidate(self, node: Node, order: int) -> None:
        cell = cell_of(node, self.features)
        if node.parent_ids:
            self.islands[node.island % len(self.islands)].place(node, order, cell)
        else:
            for island in self.islands:
                island.place(node, order, cell)
        if len(self.islands) > 1 and self.candidates % self.spec.migration_interval == 0:
            self._migrate()

    def _migrate(self) -> None:
        """Ring migration: every island receives its predecessor's best, all bests taken before any move."""
        bests = [island.archive.best for island in self.islands]
        for i, island in enumerate(self.islands):
            migrant = bests[i - 1]
            if migrant is not None:
                node, order = migrant
                island.place(node, order, cell_of(node, self.features))
        self.migrations += 1

    def next_island(self) -> int:
        """Round-robin over selections made: children stored plus selections in flight."""
        return (self.children + self.visits.pending) % len(self.islands)

    def _choose(self, rng: random.Random) -> Selection | None:
        start = self.next_island()
        for step in range(len(self.islands)):
            index = (start + step) % len(self.islands)
            if len(self.islands[index]):
                return self._choose_on(index, rng)
        return None

    def _choose_on(self, index: int, rng: random.Random) -> Selection:
        island = self.islands[index]
        wanted = self.spec.num_parents
        parents = [island.grid[cell] for cell in rng.sample(island.cells, min(wanted, len(island.cells)))]
        taken = {p.id for p in parents}
        if len(parents) < wanted:  # too few cells (or no feature values): fill from the archive
            others = [n for n in island.archive.nodes() if n.id not in taken]
            extra = rng.sample(others, min(wanted - len(parents), len(others)))
            parents += extra
            taken.update(n.id for n in extra)
        inspirations = self._inspirations(island, taken, rng)
        return Selection(parents=parents, inspirations=inspirations, island=index)

    def _inspirations(self, island: Island, taken: set[str], rng: random.Random) -> list[Node]:
        """Half the island's best elites, then nodes of random other cells, then any other elites."""
        count = self.spec.num_inspirations
        ranked = island.archive.ranked()
        chosen: list[Node] = []

        def take(nodes: list[Node], upto: int) -> None:
            for node in nodes:
                if len(chosen) >= upto:
                    return
                if node.id not in taken:
                    chosen.append(node)
                    taken.add(node.id)

        take(ranked, (count + 1) // 2)
        cells = rng.sample(island.cells, min(len(island.cells), count + len(taken)))
        take([island.grid[cell] for cell in cells], count)
        take(ranked, count)
        return chosen
