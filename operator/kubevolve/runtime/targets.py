"""From what a user typed (`kubevolve run TASK_DIR|RUN.yaml`) to a local run: its spec, task and run id, and
the folder that holds the local runs (`$KUBEVOLVE_HOME`).

Resuming is the default: running the same run again (same name, or the same task folder with no name) picks
up the unfinished run from the store instead of starting over, which is what makes `kill -9` harmless.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from kubevolve.core.liveness import live_owner
from kubevolve.core.models import RunPhase, RunRecord
from kubevolve.core.spec import RunSpec, SpecError, load_run_spec
from kubevolve.core.task import Task, load_task
from kubevolve.store.base import NotFound, Store

UNFINISHED = (RunPhase.PENDING, RunPhase.RUNNING, RunPhase.STOPPED)


def kubevolve_home() -> Path:
    """The default store and the evaluation workspace live here (`/scratch` in a step pod)."""
    return Path(os.environ.get("KUBEVOLVE_HOME", "~/.kubevolve")).expanduser()


def load_target(target: str | Path) -> tuple[RunSpec, Task]:
    """A task folder (run with defaults) or a run YAML file."""
    path = Path(target)
    if path.is_dir():
        spec = RunSpec(task=str(path.resolve()))
    elif path.is_file():
        spec = load_run_spec(path)
    else:
        raise SpecError(f"{target}: no such task folder or run file")
    return spec, load_task(spec.task)


def choose_run_id(spec: RunSpec, task: Task, store: Store, *, new: bool) -> tuple[str, bool]:
    """The run to use and whether it resumes an existing one."""
    if spec.name:
        try:
            record = store.get_run(spec.name)
        except NotFound:
            return spec.name, False
        if new:
            raise SpecError(f"run {spec.name!r} already exists; choose another name to start a new run")
        return _resumable(record), True
    if not new:
        for run in store.list_runs():
            if run.task == task.name and run.spec.get("task") == spec.task and run.phase in UNFINISHED:
                return _resumable(run), True
    return f"{task.name}-{secrets.token_hex(3)}", False


def _resumable(record: RunRecord) -> str:
    """The run's id, unless a live process runs it: two processes would commit into one run."""
    who = live_owner(record)
    if who is not None:
        raise SpecError(
            f"run {record.id!r} is being run by {who}; stop that process to resume it here, "
            "or start another run (--new)"
        )
    return record.id
