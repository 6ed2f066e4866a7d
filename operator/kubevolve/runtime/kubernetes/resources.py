"""What a run's pods need, from the task and the spec. The task is read where the operator runs (its image
ships the bundled tasks); once a step has run, the summary it recorded in the run record wins (a lab's own
image may hold a task the operator's image does not).

Evaluation pods get the task's largest stage (CPU, memory, GPUs) plus the step's own overhead, as requests
equal to limits (Guaranteed QoS: a GPU evaluation is not evicted for a neighbour). `spec.jobs.<role>`
overrides any of it; a resource set only in `requests` or only in `limits` is set in both.

A judged task's evaluation pod has two containers (`evaluation_resources`): the candidate's gets the stage
(and the overrides), as requests equal to limits; the judge's requests the step's overhead and may use up to
the stage's CPU and memory besides (a judge may train on what the candidate returned), so the pod requests
what a one-container pod did and is Burstable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from kubevolve.core.kinds import Role
from kubevolve.core.spec import EvaluationJobOverrides, JobOverrides, RunSpec
from kubevolve.core.task import TaskError, load_task

STEP_CPU_OVERHEAD = 0.5  # the `kubevolve step` process beside the evaluation worker
STEP_MEMORY_OVERHEAD_MB = 768
CPU_ROLE_DEFAULTS = {  # propose / analyze: the LLM client and the embedding model
    "requests": {"cpu": "250m", "memory": "1Gi"},
    "limits": {"cpu": "1", "memory": "2Gi"},
}
DEADLINES = {Role.PROPOSE: 1800, Role.ANALYZE: 900}


@dataclass(frozen=True)
class TaskFacts:
    """The parts of a task the operator uses; `error` says why the defaults were used instead."""

    name: str
    metric: str | None = None
    maximize: bool = True
    cpu: float = 1.0
    memory_mb: int = 2048
    gpus: int = 0
    disk_mb: int = 512  # a judged candidate's files (its memory-backed `sandbox` volume), the largest stage's
    timeout_seconds: float = 600.0
    judged: bool = False  # the task has a runner: its evaluation pods have a judge and a candidate container
    error: str = ""

    def to_score(self, metric_value: float) -> float:
        return metric_value if self.maximize else -metric_value

    def to_metric(self, score: float) -> float:
        return score if self.maximize else -score


def _known(summary: dict) -> dict:
    """The fields of a task's summary (`Task.summary`) that TaskFacts holds; a summary carries more."""
    return {f: summary[f] for f in TaskFacts.__dataclass_fields__ if f in summary and f != "error"}


@lru_cache(maxsize=256)
def _read(path: str, mtime: float) -> TaskFacts:
    return TaskFacts(**_known(load_task(path).summary()))


def reported_facts(summary: dict, fallback: TaskFacts) -> TaskFacts:
    """The facts a step recorded in the run record (the image that evaluates is the authority on its task);
    `fallback` where the record has none or one this operator cannot read."""
    known = _known(summary)
    try:
        return TaskFacts(**known) if "name" in known else fallback
    except TypeError:
        return fallback


def read_task(path: Path) -> TaskFacts:
    """The task's facts (cached until task.yaml changes), or defaults with the reason it was unreadable."""
    try:
        return _read(str(path), (path / "task.yaml").stat().st_mtime)
    except (OSError, TaskError) as err:
        return TaskFacts(name=path.name, error=str(err).splitlines()[0])


def _cpu(value: float) -> str:
    return f"{math.ceil(value * 1000)}m"


def _merge(base: dict[str, dict], overrides: JobOverrides | None) -> dict[str, dict]:
    out = {"requests": dict(base.get("requests", {})), "limits": dict(base.get("limits", {}))}
    res = overrides.resources if overrides else None
    if res is not None:
        for name, value in (res.requests or {}).items():
            out["requests"][name] = value
            if name not in (res.limits or {}):
                out["limits"][name] = value
        for name, value in (res.limits or {}).items():
            out["limits"][name] = value
            if name not in (res.requests or {}):
                out["requests"][name] = value
    return {k: {n: str(v) if not isinstance(v, str) else v for n, v in d.items()} for k, d in out.items()}


def evaluation_gpus(spec: RunSpec, facts: TaskFacts) -> int:
    ev = spec.jobs.evaluate if spec.jobs else None
    return ev.gpus if ev is not None and ev.gpus is not None else facts.gpus


def pod_resources(role: Role, spec: RunSpec, facts: TaskFacts) -> dict[str, dict[str, str]]:
    overrides = getattr(spec.jobs, role, None) if spec.jobs else None
    if role != Role.EVALUATE:
        return _merge(CPU_ROLE_DEFAULTS, overrides)
    ev: EvaluationJobOverrides = overrides or EvaluationJobOverrides()
    amounts = {
        "cpu": _cpu(facts.cpu + STEP_CPU_OVERHEAD),
        "memory": f"{facts.memory_mb + STEP_MEMORY_OVERHEAD_MB}Mi",
    }
    gpus = evaluation_gpus(spec, facts)
    if gpus:
        amounts[ev.gpu_resource] = str(gpus)
    return _merge({"requests": amounts, "limits": dict(amounts)}, ev)


def evaluation_resources(spec: RunSpec, facts: TaskFacts) -> tuple[dict, dict]:
    """(the judge container's, the candidate container's) resources of a judged task's evaluation pod."""
    ev: EvaluationJobOverrides = (spec.jobs.evaluate if spec.jobs else None) or EvaluationJobOverrides()
    # the candidate's files live in memory (a tmpfs the kubelet sizes to the volume's sizeLimit), charged to
    # the container that writes them: its memory is the stage's plus its disk, as in bubblewrap
    stage = {"cpu": _cpu(facts.cpu), "memory": f"{facts.memory_mb + facts.disk_mb}Mi"}
    gpus = evaluation_gpus(spec, facts)
    if gpus:
        stage[ev.gpu_resource] = str(gpus)
    candidate = _merge({"requests": stage, "limits": dict(stage)}, ev)
    judge = {
        "requests": {"cpu": _cpu(STEP_CPU_OVERHEAD), "memory": f"{STEP_MEMORY_OVERHEAD_MB}Mi"},
        "limits": {
            "cpu": _cpu(facts.cpu + STEP_CPU_OVERHEAD),
            "memory": f"{facts.memory_mb + STEP_MEMORY_OVERHEAD_MB}Mi",
        },
    }
    return judge, candidate


def active_deadline(role: Role, spec: RunSpec, facts: TaskFacts) -> int:
    overrides = getattr(spec.jobs, role, None) if spec.jobs else None
    if overrides is not None and overrides.active_deadline_seconds:
        return overrides.active_deadline_seconds
    if role == Role.EVALUATE:
        return int(facts.timeout_seconds * 2 + 600)  # both stages, the worker's start and the store
    return DEADLINES[role]
