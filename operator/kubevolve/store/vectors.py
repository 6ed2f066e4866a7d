"""Embeddings as float32 bytes, and exact cosine top-k over them with numpy.

Kept apart from the SQLite code because any store that holds raw vectors (or a test double) ranks the same
way: best first, earliest row on ties, zero vectors similar to nothing (0.0) rather than NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kubevolve.store.base import StoreError


def encode_vector(vector: Sequence[float] | None, what: str) -> bytes | None:
    """float32 bytes of an embedding; refuses shapes and values that would poison later searches."""
    if vector is None:
        return None
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1:
        raise StoreError(f"{what}: an embedding must be a flat list of floats, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise StoreError(f"{what}: the embedding holds NaN or infinite values")
    return arr.tobytes()


def decode_vector(blob: bytes | None) -> list[float] | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).tolist()


def query_vector(vector: Sequence[float]) -> np.ndarray:
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise StoreError("a query vector must be a non-empty flat list of finite floats")
    return arr


def rank(
    query: np.ndarray, blobs: Sequence[bytes], k: int, min_score: float = -1.0
) -> list[tuple[int, float]]:
    """(row index, cosine similarity) of the k rows most similar to `query`, best first, earliest on ties.

    Every blob must hold `query.size` float32 values; callers select rows by byte length.
    """
    if k <= 0 or not blobs:
        return []
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), query.size)
    norms = np.linalg.norm(matrix, axis=1)
    query_norm = float(np.linalg.norm(query)) or 1.0
    sims = np.clip((matrix @ query) / (np.where(norms == 0.0, 1.0, norms) * query_norm), -1.0, 1.0)
    order = np.argsort(-sims, kind="stable")[:k]
    return [(int(i), float(sims[i])) for i in order if sims[i] >= min_score]
