"""MiniLM in a child process: the engine's embedder, so that the engine's own process never imports torch.

Loading the model in a thread of the engine was not enough: `import torch` and the loading of its native
libraries hold the GIL for seconds at a time, so the event loop stalled while the model loaded (a run's first
LLM request came 7-16 s after launch), and an interpreter that has imported torch and transformers takes 2-5 s
to tear itself down at exit. In a child process the import runs beside the engine, the encodes take no GIL
from it, and the engine exits at once.

The protocol over the child's stdin and stdout: the child writes one JSON line when the model is loaded
(`{"ready": 384}`, or `{"error": "..."}`), then answers each request line `{"texts": [...]}` with a JSON line
(`{"rows": n}` or `{"error": "..."}`) followed by n x 384 float32 values. The child dies with the engine: with
its parent's thread that started it (PR_SET_PDEATHSIG) and, failing that, at the end of its stdin.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from kubevolve.loop.learn.embeddings import EmbeddingError, MiniLMEmbedder

STDERR_TAIL = 4000  # characters of the child's error output kept for an error message
PR_SET_PDEATHSIG = 1


class EmbeddingProcess:
    """An Embedder (MiniLM, 384-d, L2-normalised) running in a child interpreter; started by `load` or the
    first `encode`, and again after it died. Thread-safe (one request at a time)."""

    dim = MiniLMEmbedder.dim

    def __init__(self, python: str = sys.executable):
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: deque[str] = deque(maxlen=64)
        self._drainer: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def load(self) -> None:
        with self._lock:
            self._ensure()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        with self._lock:
            proc = self._ensure()
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps({"texts": texts}).encode() + b"\n")
                proc.stdin.flush()
                header = self._reply(proc.stdout)
                rows = int(header["rows"])
                data = _read_exactly(proc.stdout, rows * self.dim * 4)
            except (OSError, ValueError, KeyError) as err:
                self._stop()
                raise EmbeddingError(f"the embedding process failed: {err}{self._tail()}") from None
        return np.frombuffer(data, dtype=np.float32).reshape(rows, self.dim).copy()

    def close(self) -> None:
        with self._lock:
            self._stop()

    # ---- the child ------------------------------------------------------------------------------------------
    def _ensure(self) -> subprocess.Popen[bytes]:
        """The running child, started (and its model loaded) if there is none; raises EmbeddingError."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stderr.clear()
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        # the child must import this kubevolve: a checkout's is on no path of its own
        from kubevolve.loop.engineer.sandbox import checkout_root

        root = checkout_root()
        if root is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen(
            [self.python, "-m", "kubevolve.loop.learn.embedding_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._proc = proc
        self._drainer = threading.Thread(
            target=self._drain, args=(proc,), name="kubevolve-embed-stderr", daemon=True
        )
        self._drainer.start()
        try:
            assert proc.stdout is not None
            self._reply(proc.stdout)
        except (OSError, ValueError, KeyError, EmbeddingError) as err:
            self._stop()
            raise EmbeddingError(f"could not start the embedding model: {err}{self._tail()}") from None
        return proc

    def _reply(self, stdout: IO[bytes]) -> dict[str, Any]:
        line = stdout.readline()
        if not line:
            raise EmbeddingError("the embedding process exited")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise EmbeddingError(str(reply["error"]))
        return reply

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())

    def _tail(self) -> str:
        tail = "\n".join(self._stderr)[-STDERR_TAIL:].strip()
        return f"\n{tail}" if tail else ""

    def _stop(self) -> None:
        """Kill the child (if it still runs) and take the rest of its error output."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
        if self._drainer is not None:
            self._drainer.join(timeout=2.0)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EmbeddingError("the embedding process exited in the middle of a reply")
    return data


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the end of stdin still ends the child
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 9)
    if os.getppid() == 1:  # the parent died before the line above
        os._exit(0)


def serve() -> None:
    """The child: load MiniLM, then answer requests until stdin ends."""
    _die_with_parent()
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever a library prints must not corrupt the protocol
    model = MiniLMEmbedder()
    try:
        model.load()
    except EmbeddingError as err:
        out.write(json.dumps({"error": str(err)}).encode() + b"\n")
        out.flush()
        return
    out.write(json.dumps({"ready": model.dim}).encode() + b"\n")
    out.flush()
    for line in sys.stdin.buffer:
        try:
            vectors = np.ascontiguousarray(model.encode(json.loads(line)["texts"]), dtype=np.float32)
        except Exception as err:  # a bad request or a failed encode: the parent gets the message
            out.write(json.dumps({"error": f"{type(err).__name__}: {err}"}).encode() + b"\n")
        else:
            out.write(json.dumps({"rows": len(vectors)}).encode() + b"\n")
            out.write(vectors.tobytes())
        out.flush()


if __name__ == "__main__":
    serve()
