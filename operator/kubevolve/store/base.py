"""The Store protocol: what the engine needs from persistent state, whatever holds it.

Two implementations pass one contract suite (tests/store/test_store_contract.py): `SQLiteStore`, the embedded
default for one machine, and `WeaviateStore`, the store on a cluster. A store is opened for one *tenant* (a
Kubernetes namespace, "default" locally) and never returns another tenant's data; within a tenant every node
query is scoped to one run, so many runs share one store without seeing each other's nodes.

Vectors are supplied by the caller (MiniLM embeddings) and compared by cosine similarity.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from kubevolve.core.models import CognitionEntry, Insight, Node, RunRecord, Stage
from kubevolve.errors import KubevolveError

SCHEMA_VERSION = 2  # 2: nodes carry `failure` (sqlite/schema.py and weaviate/schema.py migrate 1)


class StoreError(KubevolveError, RuntimeError):
    """A store operation failed; the message says which and why. Nothing already stored is lost."""


class NotFound(StoreError):
    pass


@runtime_checkable
class Store(Protocol):
    tenant: str

    # runs
    def put_run(self, run: RunRecord) -> None:
        """Create or replace a run record (idempotent)."""

    def get_run(self, run_id: str) -> RunRecord:
        """Raise NotFound if the run does not exist in this tenant."""

    def list_runs(self) -> list[RunRecord]:
        """Newest first (by created_at)."""

    # nodes
    def add_node(self, node: Node) -> Node:
        """Insert a node in one transaction and assign its per-run `seq`; return it. Ids are unique."""

    def update_node(self, node: Node) -> None:
        """Replace a stored node's fields (same id, same run). Raise NotFound if it does not exist."""

    def get_node(self, node_id: str) -> Node:
        """Raise NotFound if absent from this tenant. The id may be a unique prefix."""

    def list_nodes(
        self,
        run_id: str,
        *,
        stages: Sequence[Stage] | None = None,
        island: int | None = None,
        after_seq: int = -1,
        limit: int | None = None,
    ) -> list[Node]:
        """Nodes of one run in `seq` order, optionally filtered."""

    def iter_nodes(self, run_id: str, *, after_seq: int = -1) -> Iterator[Node]:
        """All nodes of a run in `seq` order, streamed (for replaying sampler state and exports)."""

    def count_nodes(self, run_id: str) -> dict[Stage, int]:
        """Node count per stage for one run (stages with no nodes are omitted)."""

    def best_node(self, run_id: str) -> Node | None:
        """The evaluated node with the highest score, earliest on ties; None if nothing is evaluated."""

    def find_by_code_hash(self, run_id: str, code_hash: str) -> Node | None:
        """The first node of the run whose program has this hash (exact-duplicate check)."""

    # insights
    def add_insight(self, insight: Insight) -> Insight: ...

    def list_insights(self, run_id: str) -> list[Insight]: ...

    def search_insights(
        self, run_id: str, vector: Sequence[float], k: int
    ) -> list[tuple[Insight, float]]: ...

    # cognition
    def add_cognition(self, entries: Sequence[CognitionEntry]) -> int:
        """Insert entries, skipping any whose (collection, title, text) is already stored; return how many were new."""

    def list_cognition(self, collection: str) -> list[CognitionEntry]: ...

    def search_cognition(
        self, collection: str, vector: Sequence[float], k: int, *, min_score: float = -1.0
    ) -> list[tuple[CognitionEntry, float]]: ...

    def close(self) -> None: ...
