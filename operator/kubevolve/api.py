"""The Python API: what `kubevolve run`, `best`, `status` and `runs` do, callable from a notebook or a script.

The command line is a thin shell over these functions, so both share one set of rules:

- a *target* is a task folder, a run YAML file (a bare RunSpec or an EvolutionRun manifest) or a `RunSpec`;
- evolving a target again **resumes** its unfinished run (the same `name`, or the same task folder with no
  name), unless `new=True`;
- the store is a URL or path as `kubevolve --store` takes it, else `$KUBEVOLVE_STORE`, else
  `$KUBEVOLVE_HOME/kubevolve.db` (`~/.kubevolve` by default); the tenant is `$KUBEVOLVE_TENANT` or "default";
- a run argument left out means the most recent run.

Only the functions that run an evolution import the engine, and they do it when called: reading a store costs
the store's imports alone.
"""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from kubevolve.core.models import Node, RunPhase, RunRecord, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import Task, load_task
from kubevolve.store import default_store_path
from kubevolve.store import open_store as open_store_url
from kubevolve.store.base import NotFound, Store

if TYPE_CHECKING:
    from kubevolve.loop.agents import Agents
    from kubevolve.observe.progress import RunObserver, RunProgress
    from kubevolve.runtime.local import Evolution

__all__ = [
    "PreparedRun",
    "ProgressCallback",
    "RunResult",
    "Target",
    "best_node",
    "evolve",
    "evolve_async",
    "find_run",
    "list_nodes",
    "list_runs",
    "open_store",
    "prepare_run",
    "run_result",
    "run_status",
]

Target = RunSpec | str | os.PathLike[str]
ProgressCallback = Callable[["RunProgress", Node | None], None]
StoreArg = Store | str | None
SandboxMode = Literal["auto", "bwrap", "none"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class RunResult:
    """A run as its store holds it: the record, its candidates by stage, the best node."""

    run: RunRecord
    counts: dict[Stage, int]
    best: Node | None
    resumed: bool = False  # evolve(): whether this call continued an existing run

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def phase(self) -> RunPhase:
        return self.run.phase

    @property
    def candidates(self) -> int:
        return sum(self.counts.values())

    @property
    def best_score(self) -> float | None:
        """The best node's score ("higher is better": the task's metric, negated when it is minimised)."""
        return self.best.score if self.best else None


# ---- stores and runs ---------------------------------------------------------------------------------


def open_store(url: str | None = None, tenant: str | None = None, *, read_only: bool = False) -> Store:
    """The store `url` names (`sqlite:///abs.db`, a path, `weaviate://host:port`, `http(s)://...`), else
    $KUBEVOLVE_STORE, else $KUBEVOLVE_HOME/kubevolve.db; for `tenant`, else $KUBEVOLVE_TENANT, else "default".
    `read_only` writes nothing (the store and tenant must exist). Raises StoreError naming what is wrong."""
    url = url or os.environ.get("KUBEVOLVE_STORE") or str(default_store_path())
    tenant = tenant or os.environ.get("KUBEVOLVE_TENANT") or "default"
    return open_store_url(url, tenant=tenant, read_only=read_only)


@contextmanager
def _using(store: StoreArg, tenant: str | None) -> Iterator[Store]:
    """A Store passed in is used as is; one opened here from a URL (or the default) is closed afterwards."""
    if store is not None and not isinstance(store, str):
        yield store
        return
    opened = open_store(store, tenant)
    try:
        yield opened
    finally:
        opened.close()


def find_run(store: Store, run_id: str | None = None) -> RunRecord:
    """The run `run_id`, or the most recent run; NotFound says which is missing."""
    if run_id:
        try:
            return store.get_run(run_id)
        except NotFound:
            raise NotFound(f"no run {run_id!r} in this store") from None
    runs = store.list_runs()
    if not runs:
        raise NotFound("no runs yet: start one with `kubevolve run tasks/circle_packing`")
    return runs[0]


def run_result(store: Store, record: RunRecord, *, resumed: bool = False) -> RunResult:
    return RunResult(record, store.count_nodes(record.id), store.best_node(record.id), resumed)


def run_status(run: str | None = None, *, store: StoreArg = None, tenant: str | None = None) -> RunResult:
    """Where a run (default: the most recent) stands: phase, candidates by stage, best node."""
    with _using(store, tenant) as opened:
        return run_result(opened, find_run(opened, run))


def list_runs(*, store: StoreArg = None, tenant: str | None = None) -> list[RunResult]:
    """Every run of the tenant, newest first."""
    with _using(store, tenant) as opened:
        return [run_result(opened, record) for record in opened.list_runs()]


def best_node(run: str | None = None, *, store: StoreArg = None, tenant: str | None = None) -> Node | None:
    """The best evaluated node of a run (default: the most recent), None while nothing is evaluated."""
    with _using(store, tenant) as opened:
        return opened.best_node(find_run(opened, run).id)


def list_nodes(
    run: str | None = None,
    *,
    store: StoreArg = None,
    tenant: str | None = None,
    stages: Sequence[Stage] | None = None,
) -> list[Node]:
    """A run's nodes (default: the most recent run) in the order they were committed, optionally by stage."""
    with _using(store, tenant) as opened:
        return opened.list_nodes(find_run(opened, run).id, stages=stages)


# ---- running -----------------------------------------------------------------------------------------


@dataclass
class PreparedRun:
    """Everything an evolution needs, checked before anything runs: the spec with its run id, the task, the
    store, the proposer and analyzer, and whether it resumes a run the store already holds."""

    spec: RunSpec
    task: Task
    store: Store
    agents: Agents
    resumed: bool

    def sandbox_warning(self) -> str | None:
        """Why candidates will run without namespaces although the spec asked for the default sandbox."""
        from kubevolve.loop.engineer.sandbox import resolve_mode

        if self.spec.sandbox == "auto" and resolve_mode("auto") == "none":
            return (
                "bubblewrap is not available here; candidates run with resource limits and timeouts but "
                "without namespaces (install the 'bubblewrap' package for the full sandbox)"
            )
        return None

    def evolution(self, *, observers: Iterable[RunObserver] = (), workspace: Path | None = None) -> Evolution:
        from kubevolve.runtime.local import Evolution
        from kubevolve.runtime.targets import kubevolve_home

        return Evolution.of_agents(
            self.spec,
            self.task,
            self.store,
            self.agents,
            workspace or kubevolve_home() / "work",
            observers=observers,
        )


def _load(target: Target) -> tuple[RunSpec, Task]:
    if isinstance(target, RunSpec):
        spec = target.model_copy(deep=True)  # the caller's spec is not changed by overrides or the run id
        # a relative task folder is the caller's, resolved now, so a later call from elsewhere resumes it
        spec.task = str(Path(spec.task).resolve())
        return spec, load_task(spec.task)
    from kubevolve.runtime.targets import load_target

    return load_target(os.fspath(target))


def prepare_run(
    target: Target,
    *,
    store: StoreArg = None,
    tenant: str | None = None,
    new: bool = False,
    max_candidates: int | None = None,
    evaluators: int | None = None,
    seed: int | None = None,
    sandbox: str | None = None,
) -> PreparedRun:
    """Load and validate the target, apply the overrides, open the store and choose the run id (resuming an
    unfinished run unless `new`). Raises SpecError, TaskError, StoreError or ValueError naming what is wrong."""
    from kubevolve.loop.agents import make_agents
    from kubevolve.runtime.targets import choose_run_id

    spec, task = _load(target)
    if max_candidates is not None:
        spec.budget.max_candidates = max_candidates
    if evaluators is not None:
        spec.parallelism.evaluators = evaluators
    if seed is not None:
        spec.seed = seed
    if sandbox is not None:
        spec.sandbox = _sandbox_mode(sandbox)
    opened = open_store(store, tenant) if store is None or isinstance(store, str) else store
    try:
        spec.name, resumed = choose_run_id(spec, task, opened, new=new)
        return PreparedRun(spec, task, opened, make_agents(spec), resumed)
    except BaseException:
        if opened is not store:
            opened.close()
        raise


def _sandbox_mode(value: str) -> SandboxMode:
    modes: dict[str, SandboxMode] = {"auto": "auto", "bwrap": "bwrap", "none": "none"}
    if value not in modes:
        raise ValueError(f"sandbox {value!r}: expected one of {', '.join(modes)}")
    return modes[value]


async def evolve_async(
    target: Target,
    *,
    store: StoreArg = None,
    tenant: str | None = None,
    new: bool = False,
    max_candidates: int | None = None,
    evaluators: int | None = None,
    seed: int | None = None,
    sandbox: str | None = None,
    on_progress: ProgressCallback | None = None,
    workspace: Path | None = None,
) -> RunResult:
    """Run (or resume) an evolution in this event loop until its budget stops it, as `kubevolve run` does.

    Cancelling it records the run as Stopped; evolving the same target again resumes it."""
    prepared = prepare_run(
        target,
        store=store,
        tenant=tenant,
        new=new,
        max_candidates=max_candidates,
        evaluators=evaluators,
        seed=seed,
        sandbox=sandbox,
    )
    warning = prepared.sandbox_warning()
    if warning:
        warnings.warn(warning, RuntimeWarning, stacklevel=2)
    try:
        try:
            observers: list[RunObserver] = [] if on_progress is None else [on_progress]
            record = await prepared.evolution(observers=observers, workspace=workspace).run()
        finally:
            await prepared.agents.close()
        return run_result(prepared.store, record, resumed=prepared.resumed)
    finally:
        if prepared.store is not store:
            prepared.store.close()


def evolve(
    target: Target,
    *,
    store: StoreArg = None,
    tenant: str | None = None,
    new: bool = False,
    max_candidates: int | None = None,
    evaluators: int | None = None,
    seed: int | None = None,
    sandbox: str | None = None,
    on_progress: ProgressCallback | None = None,
    workspace: Path | None = None,
) -> RunResult:
    """`evolve_async` for scripts and notebooks: blocks until the run stops. Where an event loop is already
    running in this thread (Jupyter), the evolution runs in its own loop in a worker thread; Ctrl-C (a kernel
    interrupt) stops it there and records the run as Stopped."""
    coroutine = evolve_async(
        target,
        store=store,
        tenant=tenant,
        new=new,
        max_candidates=max_candidates,
        evaluators=evaluators,
        seed=seed,
        sandbox=sandbox,
        on_progress=on_progress,
        workspace=workspace,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    return _run_in_worker_thread(coroutine)


def _run_in_worker_thread(coroutine: Coroutine[Any, Any, _T]) -> _T:
    loop = asyncio.new_event_loop()
    task = loop.create_task(coroutine)
    finished = (
        threading.Event()
    )  # not Thread.join: a join interrupted by Ctrl-C can report a live thread dead

    def drive() -> None:
        try:
            loop.run_until_complete(task)
        except BaseException:  # the outcome is read from the task below
            pass
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            finished.set()

    threading.Thread(target=drive, name="kubevolve-evolve", daemon=True).start()
    try:
        while not finished.wait(0.1):  # a timed wait lets a KeyboardInterrupt reach this thread
            pass
    except KeyboardInterrupt:
        with suppress(RuntimeError):  # the loop closed just now: the run has ended anyway
            loop.call_soon_threadsafe(task.cancel)
        finished.wait()  # the run records itself as Stopped
        raise
    return task.result()
