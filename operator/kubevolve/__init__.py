"""kubevolve: the ASI-Evolve loop (learn, design, experiment, analyze) for evolving programs.

The public Python API (`kubevolve.evolve`, `open_store`, `best_node`, ... from kubevolve.api) is exported
lazily (PEP 562): task code imports `kubevolve.sdk...` inside the sandbox, and importing the package must not
import the engine, the store or the LLM stack. A name is imported the first time it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from kubevolve.api import (
        RunResult,
        best_node,
        evolve,
        evolve_async,
        list_nodes,
        list_runs,
        open_store,
        run_status,
    )
    from kubevolve.core.models import Node, RunPhase, RunRecord, Stage
    from kubevolve.core.spec import RunSpec, SpecError
    from kubevolve.core.task import Task, TaskError, load_task
    from kubevolve.store.base import NotFound, Store, StoreError

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "RunResult": "kubevolve.api",
    "best_node": "kubevolve.api",
    "evolve": "kubevolve.api",
    "evolve_async": "kubevolve.api",
    "list_nodes": "kubevolve.api",
    "list_runs": "kubevolve.api",
    "open_store": "kubevolve.api",
    "run_status": "kubevolve.api",
    "Node": "kubevolve.core.models",
    "RunPhase": "kubevolve.core.models",
    "RunRecord": "kubevolve.core.models",
    "Stage": "kubevolve.core.models",
    "RunSpec": "kubevolve.core.spec",
    "SpecError": "kubevolve.core.spec",
    "Task": "kubevolve.core.task",
    "TaskError": "kubevolve.core.task",
    "load_task": "kubevolve.core.task",
    "NotFound": "kubevolve.store.base",
    "Store": "kubevolve.store.base",
    "StoreError": "kubevolve.store.base",
}

__all__ = [
    "Node",
    "NotFound",
    "RunPhase",
    "RunRecord",
    "RunResult",
    "RunSpec",
    "SpecError",
    "Stage",
    "Store",
    "StoreError",
    "Task",
    "TaskError",
    "__version__",
    "best_node",
    "evolve",
    "evolve_async",
    "list_nodes",
    "list_runs",
    "load_task",
    "open_store",
    "run_status",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
