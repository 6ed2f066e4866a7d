"""The novelty filter: a candidate too similar to a recent or elite node is rejected before it is evaluated.

The exact-duplicate check (same program text) is the store's hash lookup; this is the second check: the
embedding of the candidate's motivation and evolve blocks against those of the last `window` nodes and the
best ones. Evaluations are the expensive resource; a near-copy of something already measured teaches nothing.
"""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np

from kubevolve.core.models import Node, Stage
from kubevolve.core.task import Task
from kubevolve.loop.learn.embeddings import Embedder

ELITES = 8


def novelty_text(task: Task, node: Node) -> str:
    try:
        blocks = "\n".join(task.split(node.code).blocks)
    except ValueError:
        blocks = node.code
    return f"{node.motivation}\n{blocks}"


class NoveltyFilter:
    def __init__(self, task: Task, embedder: Embedder, threshold: float, window: int):
        self.task = task
        self.embedder = embedder
        self.threshold = threshold
        self.recent: deque[Node] = deque(maxlen=max(window, 1))
        self.elites: list[tuple[float, int, Node]] = []  # min-heap of the best evaluated nodes
        self._count = 0

    def embed(self, node: Node) -> list[float]:
        if node.embedding is None:
            node.embedding = self.embedder.encode([novelty_text(self.task, node)])[0].tolist()
        return node.embedding

    def remember(self, node: Node) -> None:
        """Take a committed node (with its embedding) into the reference set."""
        if node.embedding is None:
            return
        self.recent.append(node)
        if node.stage is Stage.EVALUATED and node.score is not None:
            self._count += 1
            entry = (node.score, -self._count, node)
            if len(self.elites) < ELITES:
                heapq.heappush(self.elites, entry)
            elif entry[:2] > self.elites[0][:2]:
                heapq.heapreplace(self.elites, entry)

    def check(self, node: Node) -> str | None:
        """Why `node` is a near-duplicate, or None. Embeds the node as a side effect."""
        vector = np.asarray(self.embed(node), dtype=np.float32)
        references = {n.id: n for n in self.recent} | {n.id: n for _, _, n in self.elites}
        references.pop(node.id, None)
        if not references:
            return None
        ids = list(references)
        matrix = np.asarray([references[i].embedding for i in ids], dtype=np.float32)
        similarity = matrix @ vector
        best = int(np.argmax(similarity))
        if similarity[best] >= self.threshold:
            return (
                f"near-duplicate of node {ids[best]} (embedding similarity {similarity[best]:.4f} "
                f">= noveltyThreshold {self.threshold:g})"
            )
        return None
