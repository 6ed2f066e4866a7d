"""Embeddings of append-only rows (insights, cognition entries) kept in memory, so that a similarity search
reads from SQLite only the rows added since the previous search.

The Researcher searches the run's insights for every proposal. Read from SQLite each time, a run with 100k
insights spends most of a second per search decoding rows; ranked from this cache it spends milliseconds on one
matrix product. Rows are never updated or deleted in those tables and SQLite hands out rowids in commit
order (one writer at a time, whichever process), so "rowid greater than the last one seen" is exactly what is
new, written by this process or another. Ranking is `vectors.rank`'s: cosine similarity, best first, earliest
row on ties, zero vectors similar to nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Rows:
    """One (table, tenant, scope, dimension)'s unit-length embeddings, in rowid order, in a growing buffer."""

    dim: int
    last_rowid: int = 0
    size: int = 0
    rowids: np.ndarray = field(init=False)
    matrix: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.rowids = np.zeros(0, dtype=np.int64)
        self.matrix = np.zeros((0, self.dim), dtype=np.float32)

    def append(self, rowids: list[int], blobs: list[bytes]) -> None:
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), self.dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = vectors / np.where(norms == 0.0, 1.0, norms)
        needed = self.size + len(rowids)
        if needed > len(self.rowids):  # double the buffer: appends cost O(new rows) on average
            capacity = max(needed, 2 * len(self.rowids), 64)
            matrix = np.zeros((capacity, self.dim), dtype=np.float32)
            matrix[: self.size] = self.matrix[: self.size]
            ids = np.zeros(capacity, dtype=np.int64)
            ids[: self.size] = self.rowids[: self.size]
            self.matrix, self.rowids = matrix, ids
        self.matrix[self.size : needed] = unit
        self.rowids[self.size : needed] = rowids
        self.size, self.last_rowid = needed, rowids[-1]


class VectorCache:
    """Search `table`'s rows of one scope (a run's insights, a collection's cognition entries) by cosine
    similarity; returns the rowids of the best k. Thread-safe; one per store handle."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str, int], _Rows] = {}
        self._lock = threading.Lock()

    def search(
        self,
        conn: sqlite3.Connection,
        table: str,
        scope_column: str,
        tenant: str,
        scope: str,
        query: np.ndarray,
        k: int,
        min_score: float = -1.0,
    ) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        with self._lock:
            rows = self._rows.setdefault((table, tenant, scope, query.size), _Rows(query.size))
            new = conn.execute(
                f"SELECT rowid, embedding FROM {table} WHERE tenant = ? AND {scope_column} = ? AND rowid > ?"
                " AND typeof(embedding) = 'blob' AND length(embedding) = ? ORDER BY rowid",
                (tenant, scope, rows.last_rowid, query.nbytes),
            ).fetchall()
            if new:
                rows.append([r[0] for r in new], [r[1] for r in new])
            if not rows.size:
                return []
            matrix, rowids = rows.matrix[: rows.size], rows.rowids[: rows.size]
            query_norm = float(np.linalg.norm(query)) or 1.0
            sims = np.clip(matrix @ (query / query_norm), -1.0, 1.0)
            if k < rows.size:  # the k best, then in order (stable: the earliest row first on ties)
                top = np.argpartition(-sims, k - 1)[:k]
                threshold = sims[top].min()
                top = np.flatnonzero(sims >= threshold)
            else:
                top = np.arange(rows.size)
            order = top[np.argsort(-sims[top], kind="stable")][:k]
            return [(int(rowids[i]), float(sims[i])) for i in order if sims[i] >= min_score]
