"""The task contract: a folder with `task.yaml`, a program with EVOLVE-BLOCK markers, `evaluate.py`, `run.py`
and `cognition/`. `load_task` validates all of it and names whatever is wrong, before any candidate runs.

The evaluation contract (documented in docs/tasks.md): the task's runner (`run.py`) defines `run(program,
request) -> outputs` and runs in the candidate's sandboxed process; its judge (`evaluate.py`) defines
`judge(candidate, stage) -> dict` and runs in a trusted process where no candidate code executes. The dict's
values are finite numbers (not booleans: a flag is not a quantity to optimise), one of them the task's primary
metric, plus an optional key `artifacts` mapping names to text (tracebacks, per-benchmark tables) for the
Researcher and the Analyzer. Raising, hanging or returning anything else is a failed candidate.

A task without `runner` is a legacy task: its `evaluate(program_path, stage)` runs in the candidate's
process, where the candidate can reach it. It keeps working, with a warning in the docs, until it moves.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from kubevolve.core import evolve_block, pysource
from kubevolve.core.spec import SamplerSpec, StageName, _Model, format_validation_error
from kubevolve.errors import KubevolveError

STAGE_ORDER: tuple[StageName, ...] = ("quick", "full")


class TaskError(KubevolveError, ValueError):
    """A task folder is invalid; the message names the file and the field."""


class Resources(_Model):
    cpu: Annotated[float, Field(gt=0)] = 1
    memory_mb: Annotated[int, Field(ge=64)] = 2048
    gpus: Annotated[int, Field(ge=0)] = 0
    max_processes: Annotated[int, Field(ge=1)] = 64
    max_file_mb: Annotated[int, Field(ge=1)] = 256
    # all the candidate's files together: its scratch, /tmp and /dev/shm (judged tasks; RAM in bubblewrap)
    max_disk_mb: Annotated[int, Field(ge=1)] = 512


class StageSpec(_Model):
    timeout_seconds: Annotated[float, Field(gt=0)] = 60
    resources: Resources = Field(default_factory=Resources)
    # early rejection: a candidate whose metric is below (above) the bound fails this stage
    reject_below: dict[str, float] = Field(default_factory=dict)
    reject_above: dict[str, float] = Field(default_factory=dict)
    # "ranks": the candidate's own processes may open TCP sockets to meet (torch.distributed, NCCL, mpirun);
    # they reach nothing else (a network namespace per candidate, or the pod's NetworkPolicy)
    network: Literal["isolated", "ranks"] = "isolated"


class Checks(_Model):
    """Static checks on the candidate's source, run before any evaluation."""

    forbidden_imports: list[str] = Field(default_factory=list)
    required_names: list[str] = Field(default_factory=list)  # top-level functions/classes that must exist
    max_code_bytes: Annotated[int, Field(ge=1)] = 200_000


class EvolveMarkers(_Model):
    start: str = evolve_block.START
    end: str = evolve_block.END


class TaskSpec(_Model):
    name: str
    description: str
    program: str = "initial.py"
    evaluator: str = "evaluate.py"
    # the untrusted half of the evaluation: run(program, request) -> outputs, in the candidate's sandbox
    runner: str | None = None
    metric: str
    direction: Literal["maximize", "minimize"] = "maximize"
    evolve_block: EvolveMarkers = Field(default_factory=EvolveMarkers)
    stages: dict[StageName, StageSpec]
    checks: Checks = Field(default_factory=Checks)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    cognition: str = "cognition"
    # a score the task's README documents as reference (e.g. the best published result)
    reference_score: float | None = None

    @model_validator(mode="after")
    def _stages(self) -> TaskSpec:
        if not self.stages:
            raise ValueError("at least one stage (quick or full) is required")
        return self


class Task:
    """A loaded, validated task folder."""

    def __init__(self, root: Path, spec: TaskSpec, initial_code: str):
        self.root = root
        self.spec = spec
        self.initial_code = initial_code

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def program_path(self) -> Path:
        return self.root / self.spec.program

    @property
    def evaluator_path(self) -> Path:
        return self.root / self.spec.evaluator

    @property
    def runner_path(self) -> Path | None:
        return self.root / self.spec.runner if self.spec.runner else None

    @property
    def cognition_dir(self) -> Path:
        return self.root / self.spec.cognition

    @property
    def stage_names(self) -> list[StageName]:
        return [s for s in STAGE_ORDER if s in self.spec.stages]

    def summary(self) -> dict[str, Any]:
        """What an orchestrator needs of the task without its files: the metric and its direction, and what
        one evaluation of every stage takes (largest cpu, memory and GPUs, total time). The steps record it
        in the run record, so an operator whose image lacks the task (a lab's own image) still knows it."""
        stages = list(self.spec.stages.values())
        return {
            "name": self.name,
            "metric": self.spec.metric,
            "maximize": self.spec.direction == "maximize",
            "cpu": max(s.resources.cpu for s in stages),
            "memory_mb": max(s.resources.memory_mb for s in stages),
            "gpus": max(s.resources.gpus for s in stages),
            "disk_mb": max(s.resources.max_disk_mb for s in stages),
            "timeout_seconds": sum(s.timeout_seconds for s in stages),
            "sampler": self.spec.sampler.kind,  # what a run uses whose spec names no sampler
            "judged": self.runner_path is not None,  # a judge and a runner: the two-container evaluation pod
        }

    def score_of(self, metrics: dict[str, float]) -> float:
        """The node score (higher is better) of a metrics dict."""
        value = metrics[self.spec.metric]
        return value if self.spec.direction == "maximize" else -value

    def with_block(self, block: str) -> str:
        """The initial program with its one evolve block replaced by `block`: how a baseline that keeps only
        its block, or a test, becomes a whole candidate program."""
        return self.split(self.initial_code).join([block])

    def split(self, code: str) -> evolve_block.Split:
        return evolve_block.split(code, self.spec.evolve_block.start, self.spec.evolve_block.end)


def run_stages(task: Task, stages: Sequence[StageName] | None) -> list[StageName]:
    """The task's stages a run evaluates (the spec's `stages`, None: all), in the task's order."""
    return [s for s in task.stage_names if stages is None or s in stages]


def load_task(path: str | Path) -> Task:
    root = Path(path).resolve()
    manifest = root / "task.yaml"
    if not root.is_dir():
        raise TaskError(f"{root}: not a task folder (it does not exist or is not a directory)")
    if not manifest.is_file():
        raise TaskError(f"{root}: no task.yaml (a task folder needs task.yaml, the program and evaluate.py)")
    try:
        data = yaml.safe_load(manifest.read_text())
    except yaml.YAMLError as err:
        raise TaskError(f"{manifest}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise TaskError(f"{manifest}: must be a mapping of fields, got {type(data).__name__}")
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as err:
        raise TaskError(f"{manifest}: " + format_validation_error(err, prefix="task")) from None

    program = root / spec.program
    if not program.is_file():
        raise TaskError(f"{manifest}: program {spec.program!r} not found in {root}")
    code = program.read_text()
    try:
        pysource.parse(code, filename=str(program))
    except SyntaxError as err:
        raise TaskError(f"{program}: initial program does not parse: line {err.lineno}: {err.msg}") from None
    try:
        evolve_block.split(code, spec.evolve_block.start, spec.evolve_block.end)
    except evolve_block.BlockError as err:
        raise TaskError(f"{program}: {err}") from None

    evaluator = root / spec.evaluator
    if not evaluator.is_file():
        raise TaskError(f"{manifest}: evaluator {spec.evaluator!r} not found in {root}")
    try:
        tree = pysource.parse(evaluator.read_text(), filename=str(evaluator))
    except SyntaxError as err:
        raise TaskError(f"{evaluator}: does not parse: line {err.lineno}: {err.msg}") from None
    entry = "judge(candidate, stage)" if spec.runner else "evaluate(program_path, stage)"
    if not any(isinstance(n, ast.FunctionDef) and n.name == entry.split("(")[0] for n in tree.body):
        raise TaskError(f"{evaluator}: must define a top-level function {entry}")
    if spec.runner:
        runner = root / spec.runner
        if not runner.is_file():
            raise TaskError(f"{manifest}: runner {spec.runner!r} not found in {root}")
        try:
            tree = pysource.parse(runner.read_text(), filename=str(runner))
        except SyntaxError as err:
            raise TaskError(f"{runner}: does not parse: line {err.lineno}: {err.msg}") from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body):
            raise TaskError(f"{runner}: must define a top-level function run(program, request)")
    return Task(root, spec, code)
