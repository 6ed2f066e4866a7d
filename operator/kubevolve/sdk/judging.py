"""What a task's judge (`evaluate.py`) sees of the candidate: a handle that sends requests and returns data.

The contract (docs/tasks.md, "The judge and the runner"): `evaluate.py` defines `judge(candidate, stage) ->
metrics` and runs in a trusted process in which no candidate code ever executes; the task's `run.py` defines
`run(program, request) -> outputs` and runs, with the candidate's program, in a fresh sandboxed process per
candidate. `candidate.request(request)` sends `request` (a dict of JSON data and numpy arrays) to `run` and
returns what `run` returned, decoded strictly and within size limits; `candidate.seconds` is the wall time of
that request as the judge measured it. A failure on the candidate's side raises one of the exceptions below in
the judge; a judge lets them propagate (the candidate fails the stage with the right kind) unless it wants to
score partial work.

`LocalJudge` (and `evaluate_unsandboxed`) runs the same judge and runner in this process with no boundary at
all: for tests and for measuring a baseline by hand, never for candidates.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from kubevolve.errors import KubevolveError
from kubevolve.sdk import channel
from kubevolve.sdk.channel import ProtocolViolation
from kubevolve.sdk.evaluator_kit import load_program

__all__ = [
    "Candidate",
    "CandidateCrashed",
    "CandidateError",
    "CandidateFailed",
    "ProtocolViolation",
    "LocalJudge",
    "evaluate_unsandboxed",
    "in_process_candidate",
    "judge_seed",
]


class CandidateFailed(KubevolveError):
    """The candidate gave no usable reply. `kind` is the engine's status for it (timeout, cpu_limit, ...)."""

    kind = "crashed"

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class CandidateError(CandidateFailed):
    """`run` (or the program it called) raised. The message is the candidate's, as text; `exception_classes`
    and `errno` say what it raised, so that a memory or process limit is told apart from a bug."""

    kind = "error"

    def __init__(self, message: str, exception_classes: list[str] | None = None, errno: int | None = None):
        super().__init__(message)
        self.exception_classes = exception_classes or []
        self.errno = errno


class CandidateCrashed(CandidateFailed):
    """The candidate's process ended without a reply: killed by a limit, by the timeout, or crashed."""


class Candidate(Protocol):
    """The judge's handle on one candidate at one stage."""

    seconds: float  # wall time of the last request, measured by the judge

    def request(
        self, request: dict[str, Any], *, timeout: float | None = None, max_bytes: int | None = None
    ) -> Any:
        """Send `request` to the candidate's `run` and return its outputs. `timeout` (seconds) bounds this
        request within the stage's; `max_bytes` bounds the reply (default 64 MiB)."""
        ...

    def restart(self) -> None:
        """End the candidate's process; the next request starts a fresh one (a fresh import, fresh scratch)."""
        ...


SEED_VARIABLE = "KUBEVOLVE_JUDGE_SEED"


def judge_seed(default: int) -> int:
    """A seed for what the judge draws and the candidate must not be able to reproduce (held-out inputs, a
    generated corpus with its ground truth): secret to the candidate, the same for every candidate of a run.
    The engine sets it in the judge's environment only (a random one per run, unless the engine itself runs
    with KUBEVOLVE_JUDGE_SEED set, to reproduce a run); in tests and hand runs it is `default`."""
    value = os.environ.get(SEED_VARIABLE)
    return int(value) if value else default


def _load(path: Path, name: str) -> ModuleType:
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _InProcess:
    """A Candidate without a boundary: the program runs here, its outputs still make the channel's round trip
    (so what the judge receives is exactly what it would receive from a sandbox)."""

    def __init__(self, runner: ModuleType, program_path: str, required: list[str]):
        self.runner, self.program_path, self.required = runner, program_path, required
        self.program: ModuleType | None = None
        self.seconds = 0.0

    def request(
        self, request: dict[str, Any], *, timeout: float | None = None, max_bytes: int | None = None
    ) -> Any:
        started = time.perf_counter()
        try:
            if self.program is None:
                self.program = load_program(self.program_path, defined=self.required)
            request = channel.decode(channel.encode(request))
            outputs = self.runner.run(self.program, request)
        except Exception as err:
            raise CandidateError(
                f"{type(err).__name__}: {err}",
                [c.__name__ for c in type(err).__mro__],
                getattr(err, "errno", None),
            ) from err
        try:
            data = channel.encode(outputs)
        except (TypeError, ValueError) as err:
            raise CandidateError(f"{type(err).__name__}: {err}", [type(err).__name__]) from err
        value = channel.decode(data, max_bytes or channel.DEFAULT_MAX_BYTES)
        self.seconds = time.perf_counter() - started
        return value

    def restart(self) -> None:
        self.program = None


def _task_modules(task_dir: str | Path) -> tuple[Any, ModuleType]:
    from kubevolve.core.task import load_task

    task = load_task(task_dir)
    if task.runner_path is None:
        raise ValueError(f"{task.root}: the task has no runner (task.yaml `runner`), so it has no judge")
    return task, _load(task.runner_path, f"_runner_{task.name}")


def in_process_candidate(task_dir: str | Path, program_path: str | Path) -> Candidate:
    """The program at `program_path` as a Candidate run in this very process by the task's runner: for a
    judge's hand runs and tests with settings of their own, never for candidates."""
    task, runner = _task_modules(task_dir)
    return _InProcess(runner, str(program_path), task.spec.checks.required_names)


class LocalJudge:
    """A task's judge and runner loaded once into this process, to judge program files with no boundary at
    all: for tests and for measuring baselines by hand, never for candidates."""

    def __init__(self, task_dir: str | Path):
        task, self.runner = _task_modules(task_dir)
        self.judge = _load(task.evaluator_path, f"_judge_{task.name}")
        self.required = task.spec.checks.required_names

    def evaluate(self, program_path: str | Path, stage: str) -> dict[str, Any]:
        """The judge's metrics for the program at `program_path`, its program run in this very process."""
        return self.judge.judge(_InProcess(self.runner, str(program_path), self.required), stage)


def evaluate_unsandboxed(task_dir: str | Path, program_path: str | Path, stage: str) -> dict[str, Any]:
    """`LocalJudge(task_dir).evaluate(program_path, stage)`: once, for a test or a baseline by hand."""
    return LocalJudge(task_dir).evaluate(program_path, stage)
