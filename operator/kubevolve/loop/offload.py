"""CPU work off the event loop: one pool of daemon threads per process, sized to the machine.

The local runtime runs every proposal, evaluation and analysis of a run on one event loop. Whatever takes
milliseconds of CPU there (retrieval with its embedding, building a prompt, parsing and applying an answer,
the static check, the novelty filter's canonical form) would hold every other proposal and every evaluator's
bookkeeping for that long, so it runs here and the loop only awaits it. Threads, not processes: the heavy
parts (MiniLM, numpy, SQLite) release the GIL, and the pure-Python parts are a millisecond or two each.

The threads are daemons and not those of `concurrent.futures.ThreadPoolExecutor`, whose threads the
interpreter joins at exit: a run that ends must not wait for a job it no longer needs.
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

_T = TypeVar("_T")
_P = ParamSpec("_P")


def machine_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class DaemonPool(Executor):
    """A fixed set of daemon threads taking jobs from one queue, started on first use."""

    def __init__(self, workers: int, name: str = "kubevolve-cpu"):
        self.workers = max(1, workers)
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError(f"{self.name} pool is shut down")
            if len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        self._jobs.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as err:  # handed to whoever awaits the future
                future.set_exception(err)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()


# Process-wide on purpose: the CPUs are the machine's, shared by every run of the process.
_pool: DaemonPool | None = None
_pool_lock = threading.Lock()


def cpu_pool() -> DaemonPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = DaemonPool(machine_cpus())
        return _pool


async def off_loop(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """`fn(*args, **kwargs)` in the CPU pool, awaited. Cancelling the await abandons the result, not the job."""
    return await asyncio.wrap_future(cpu_pool().submit(fn, *args, **kwargs))
