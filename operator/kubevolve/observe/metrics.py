"""Every Prometheus metric kubevolve exports, defined in this one module, and the exporter.

Naming follows the Prometheus conventions: a `kubevolve_` prefix, base units in the name (`_seconds`, `_usd`,
`_ratio`), `_total` on counters. Labels keep cardinality bounded: `namespace` and `run` (a run is one series
family, never one per candidate), `model` for LLM metrics, and values from fixed sets for `outcome` (a node's
final stage), `stage` (quick | full), `reason` (a `FailureKind` value), `purpose`, `type`, `phase`,
`result` and `job`. Node ids never become labels.

`run_metrics.RunMetrics` feeds one run's series: the local runtime and `kubevolve run --metrics-port` as nodes
are committed, the operator from the store (`runtime/kubernetes/telemetry.py`), so the same dashboards work on
a laptop and on a cluster. `serve()` starts the exporter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from kubevolve.core.models import Node, RunPhase
from kubevolve.observe.progress import failure_kind

if TYPE_CHECKING:
    from kubevolve.core.task import Task

LOCAL_NAMESPACE = "local"

# seconds: from a sub-second toy evaluation to a multi-hour GPU training run
EVALUATION_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    14400,
)
PROPOSAL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

RUN = ("namespace", "run")


class Metrics:
    """The metric families, registered in one registry (the process default, or a fresh one in a test)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY):
        r = registry
        # candidates
        self.candidates = Counter(
            "kubevolve_candidates_total",
            "Candidates committed, by outcome (the node's final stage).",
            [*RUN, "outcome"],
            registry=r,
        )
        self.failures = Counter(
            "kubevolve_candidate_failures_total",
            "Candidates that did not get a score, by outcome and a reason from a bounded set.",
            [*RUN, "outcome", "reason"],
            registry=r,
        )
        self.best_score = Gauge(
            "kubevolve_best_score",
            "The run's best score so far (the task metric, negated when the task minimises it).",
            RUN,
            registry=r,
        )
        # durations
        self.evaluation_duration = Histogram(
            "kubevolve_evaluation_duration_seconds",
            "Time a candidate spent in an evaluation stage.",
            [*RUN, "stage"],
            buckets=EVALUATION_BUCKETS,
            registry=r,
        )
        self.evaluation_gpu_seconds = Counter(
            "kubevolve_evaluation_gpu_seconds_total",
            "Evaluation seconds times the GPUs the stage holds (divide by 3600 for GPU-hours).",
            [*RUN, "stage"],
            registry=r,
        )
        self.proposal_duration = Histogram(
            "kubevolve_proposal_duration_seconds",
            "Time to propose one candidate (the LLM call or the offline operators).",
            RUN,
            buckets=PROPOSAL_BUCKETS,
            registry=r,
        )
        # evaluators
        self.occupancy = Gauge(
            "kubevolve_evaluator_occupancy_ratio",
            "Busy evaluator slot time over total slot time since the pipeline started (0 to 1).",
            RUN,
            registry=r,
        )
        self.slots_busy = Gauge(
            "kubevolve_evaluator_slots_busy", "Evaluation slots running a candidate now.", RUN, registry=r
        )
        self.slots = Gauge("kubevolve_evaluator_slots", "Evaluation slots of the run.", RUN, registry=r)
        # LLM
        self.llm_requests = Counter(
            "kubevolve_llm_requests_total",
            "Completed LLM requests, by model and purpose (researcher, debug_retry, analyzer, llm_judge).",
            [*RUN, "model", "purpose"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "kubevolve_llm_tokens_total",
            "LLM tokens, by model, purpose and type (prompt or completion).",
            [*RUN, "model", "purpose", "type"],
            registry=r,
        )
        self.llm_cost = Counter(
            "kubevolve_llm_cost_usd_total",
            "LLM cost in US dollars at the prices in the run spec, by model and purpose.",
            [*RUN, "model", "purpose"],
            registry=r,
        )
        # operator (wired by the operator)
        self.admission_wait = Histogram(
            "kubevolve_admission_wait_seconds",
            "Time a Job waited between creation and its pod starting (queueing, Kueue admission).",
            [*RUN, "job"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.reconciles = Counter(
            "kubevolve_operator_reconciles_total",
            "Reconciliations of EvolutionRuns, by result (ok, retry, error).",
            ["namespace", "result"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "kubevolve_operator_reconcile_duration_seconds",
            "Time one reconciliation of an EvolutionRun took.",
            ["namespace"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.runs = Gauge(
            "kubevolve_runs",
            "Runs by phase (Pending, Running, Succeeded, Failed, Stopped).",
            ["namespace", "phase"],
            registry=r,
        )

    def observe_reconcile(self, namespace: str, seconds: float, result: str = "ok") -> None:
        """For the operator: one reconciliation of a run in `namespace` and how it ended."""
        self.reconciles.labels(namespace, result).inc()
        self.reconcile_duration.labels(namespace).observe(seconds)

    def set_runs_by_phase(self, namespace: str, counts: dict[str, int]) -> None:
        """For the operator: the number of runs in each phase in `namespace` (every phase, zeros included)."""
        for phase in RunPhase:
            self.runs.labels(namespace, str(phase)).set(counts.get(str(phase), 0))


# Process-wide on purpose: a process has one default Prometheus registry, which the exporter (`serve`) serves
# and where each family can be registered only once; every run of the process (the operator's many, or a local
# run) adds its own labelled series to these families. Tests pass `Metrics(CollectorRegistry())` instead.
METRICS = Metrics()


def metric_reason(node: Node) -> str:
    """The `reason` label of a failed node: its FailureKind's value (`timeout`, `forbidden_import`, ...)."""
    return str(failure_kind(node))


RUN_FAMILIES = (  # the families a RunMetrics feeds (admission waits are the operator's, per Job)
    "candidates",
    "failures",
    "best_score",
    "evaluation_duration",
    "evaluation_gpu_seconds",
    "proposal_duration",
    "occupancy",
    "slots_busy",
    "slots",
    "llm_requests",
    "llm_tokens",
    "llm_cost",
)


def drop_run_series(metrics: Metrics, namespace: str, run: str) -> None:
    """Remove one run's series from the families a RunMetrics feeds."""
    for name in RUN_FAMILIES:
        getattr(metrics, name).remove_by_labels({"namespace": namespace, "run": run})


def stage_gpus(task: Task) -> dict[str, int]:
    """GPUs one evaluation holds in each stage of a task, for the GPU-seconds counter."""
    return {name: stage.resources.gpus for name, stage in task.spec.stages.items()}


def serve(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> int:
    """Serve /metrics over HTTP from a daemon thread; return the port (useful with port 0).

    The `*_created` series prometheus-client adds by default are turned off: they double the series count and
    no dashboard uses them."""
    disable_created_metrics()
    httpd, _ = start_http_server(port, addr, registry=registry)
    return httpd.server_address[1]
