"""Every Prometheus metric kubevolve exports, defined in this one module, and a recorder that feeds them.

Naming follows the Prometheus conventions: a `kubevolve_` prefix, base units in the name (`_seconds`, `_usd`,
`_ratio`), `_total` on counters. Labels keep cardinality bounded: `namespace` and `run` (a run is one series
family, never one per candidate), `model` for LLM metrics, and values from fixed sets for `outcome` (a node's
final stage), `stage` (quick | full), `reason` (`progress.failure_reason`), `purpose`, `type`, `phase`,
`result` and `job`. Node ids never become labels.

`RunMetrics` is a progress callback (`on_progress(progress, node)`), so the local runner and `kubevolve run
--metrics-port` feed it as nodes are committed; the operator feeds the same families from the store
(`k8s/telemetry.py`), so the same dashboards work on a laptop and on a cluster. `serve()` starts the exporter.

    metrics = RunMetrics("packing-1", namespace="lab-a")
    serve(9108)                         # /metrics on 127.0.0.1:9108
    evolution = Evolution(..., on_progress=metrics)
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from .analyzer import ANALYSED_STAGES
from .models import Node, RunPhase, Stage
from .progress import RunProgress, failure_reason

if TYPE_CHECKING:
    from .runner import Evolution
    from .task import Task

LOCAL_NAMESPACE = "local"
EVALUATION_STAGES = ("quick", "full")
JOB_KINDS = ("propose", "evaluate", "analyze")  # the operator's Jobs, for the admission-wait histogram
_PURPOSES = {"researcher": "researcher", "debug retry": "debug_retry", "analyzer": "analyzer"}
_BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}

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
            "Completed LLM requests, by model and purpose (researcher, debug_retry, analyzer).",
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


METRICS = Metrics()  # the process-wide families, in prometheus_client's default registry


def metric_reason(node: Node) -> str:
    """`failure_reason`, with exception names outside Python's builtins folded into one label value: a
    candidate may raise a class it invented, and each such name must not become a new series."""
    reason = failure_reason(node)
    if reason.startswith("raised ") and reason[len("raised ") :] not in _BUILTIN_EXCEPTIONS:
        return "raised other"
    return reason


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


class RunMetrics:
    """Records one run's progress into the metric families; pass it (or `tee`) as `on_progress`.

    LLM usage is read from each node's transcript, one entry per completed request. The Analyzer's request for a
    node finishes after the node is committed, so nodes awaiting analysis are kept (by reference, never as a
    label) and their later transcript entries are counted at the next callback; the runner's last callback comes
    after every analysis is done.
    """

    def __init__(
        self,
        run_id: str,
        namespace: str = LOCAL_NAMESPACE,
        *,
        gpus: dict[str, int] | int = 0,
        slots: int | None = None,
        metrics: Metrics | None = None,
    ):
        self.run_id = run_id
        self.namespace = namespace
        self.m = metrics or METRICS
        self.gpus = gpus
        self._labels = (namespace, run_id)
        self._phase: str | None = None
        self._counted: dict[str, tuple[Node, int]] = {}  # node id -> (node, transcript entries counted)
        self._bound: Evolution | None = None
        self._max_pending = 1000  # analyses in flight are far fewer; one that failed is dropped from here
        for stage in Stage:  # every outcome exists from the start, so increase() counts the first one too
            if stage is not Stage.PROPOSED:
                self.m.candidates.labels(*self._labels, str(stage))
        if slots is not None:
            self.m.slots.labels(*self._labels).set(slots)

    # ---- callback -----------------------------------------------------------------------------------
    def __call__(self, progress: RunProgress, node: Node | None) -> None:
        if node is not None:
            self.observe_node(node)
        self.observe_progress(progress)
        if node is None and self._bound is not None:
            with contextlib.suppress(Exception):  # the run's final phase, which the runner just stored
                self.set_phase(str(self._bound.store.get_run(self.run_id).phase))

    def tee(
        self, other: Callable[[RunProgress, Node | None], Any] | None
    ) -> Callable[[RunProgress, Node | None], None]:
        """A callback that calls `other` (e.g. the progress display) and then records."""

        def both(progress: RunProgress, node: Node | None) -> None:
            if other is not None:
                other(progress, node)
            self(progress, node)

        return both

    # ---- recording ----------------------------------------------------------------------------------
    def observe_node(self, node: Node) -> None:
        """Count one committed candidate: its outcome, failure reason, step durations and LLM usage."""
        labels = self._labels
        self.m.candidates.labels(*labels, str(node.stage)).inc()
        if node.stage not in (Stage.EVALUATED, Stage.PROPOSED):
            self.m.failures.labels(*labels, str(node.stage), metric_reason(node)).inc()
        if "propose" in node.timings:
            self.m.proposal_duration.labels(*labels).observe(node.timings["propose"])
        for stage in EVALUATION_STAGES:
            seconds = node.timings.get(stage)
            if seconds is None:
                continue
            self.m.evaluation_duration.labels(*labels, stage).observe(seconds)
            gpus = self.gpus.get(stage, 0) if isinstance(self.gpus, dict) else self.gpus
            self.m.evaluation_gpu_seconds.labels(*labels, stage).inc(seconds * gpus)
        self._count_llm(node, 0)
        if node.stage in ANALYSED_STAGES and not node.insight_id:
            self._counted[node.id] = (node, len(node.transcript))  # its analysis may add an LLM request
            while len(self._counted) > self._max_pending:
                del self._counted[next(iter(self._counted))]
        self._sweep()

    def observe_update(self, node: Node) -> None:
        """A fresh copy of a node counted before, for a runtime that re-reads nodes from the store (the
        operator): count the LLM requests its analysis added since."""
        known = self._counted.get(node.id)
        if known is not None:
            self._counted[node.id] = (node, known[1])
            self._sweep()

    def awaiting_analysis(self) -> list[str]:
        """Ids of counted nodes whose analysis (and its LLM request) has not been stored yet."""
        return list(self._counted)

    def observe_progress(self, progress: RunProgress) -> None:
        """Best score, occupancy and the run's phase (Running from the first callback)."""
        if self._phase is None:
            self.set_phase(str(RunPhase.RUNNING))
        if progress.best_score is not None:
            self.m.best_score.labels(*self._labels).set(progress.best_score)
        if self._bound is None:
            self.m.occupancy.labels(*self._labels).set(progress.occupancy)
        self._sweep()

    def set_phase(self, phase: str) -> None:
        """Move this run to `phase` in `kubevolve_runs` (one run counts in exactly one phase)."""
        if phase == self._phase:
            return
        if self._phase is not None:
            self.m.runs.labels(self.namespace, self._phase).dec()
        self.m.runs.labels(self.namespace, phase).inc()
        self._phase = phase

    def bind(self, evolution: Evolution) -> RunMetrics:
        """Read evaluator slots (busy, total) and occupancy live from a running Evolution at scrape time."""
        self._bound = evolution
        labels = self._labels

        def pool_value(read: Callable[[Any], float]) -> Callable[[], float]:
            def value() -> float:
                pool = getattr(evolution, "pool", None)
                if pool is None or not pool.slots:
                    return 0.0
                try:
                    return float(read(pool))
                except Exception:  # a scrape must never fail because the pool is starting or closing
                    return 0.0

            return value

        self.m.slots.labels(*labels).set(evolution.spec.parallelism.evaluators)
        self.m.slots_busy.labels(*labels).set_function(pool_value(lambda pool: max(0, pool.busy())))
        self.m.occupancy.labels(*labels).set_function(pool_value(lambda pool: pool.occupancy()))
        return self

    def remove(self) -> None:
        """Drop this run's series (the operator calls it when a run is deleted); its phase count too."""
        if self._phase is not None:
            self.m.runs.labels(self.namespace, self._phase).dec()
            self._phase = None
        drop_run_series(self.m, self.namespace, self.run_id)
        self.m.admission_wait.remove_by_labels({"namespace": self.namespace, "run": self.run_id})

    # ---- internals ----------------------------------------------------------------------------------
    def _count_llm(self, node: Node, start: int) -> None:
        for entry in node.transcript[start:]:
            model = str(entry.get("model") or "unknown")
            purpose = _PURPOSES.get(str(entry.get("purpose", "")), "other")
            labels = (*self._labels, model, purpose)
            self.m.llm_requests.labels(*labels).inc()
            self.m.llm_tokens.labels(*labels, "prompt").inc(float(entry.get("prompt_tokens") or 0))
            self.m.llm_tokens.labels(*labels, "completion").inc(float(entry.get("completion_tokens") or 0))
            self.m.llm_cost.labels(*labels).inc(float(entry.get("cost_usd") or 0.0))

    def _sweep(self) -> None:
        """Count the Analyzer's requests of nodes whose analysis finished since the last callback."""
        for node_id, (node, seen) in list(self._counted.items()):
            if len(node.transcript) > seen:
                self._count_llm(node, seen)
                self._counted[node_id] = (node, len(node.transcript))
            if node.insight_id:
                del self._counted[node_id]


def serve(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> int:
    """Serve /metrics over HTTP from a daemon thread; return the port (useful with port 0).

    The `*_created` series prometheus-client adds by default are turned off: they double the series count and
    no dashboard uses them."""
    disable_created_metrics()
    httpd, _ = start_http_server(port, addr, registry=registry)
    return httpd.server_address[1]


def serve_run_metrics(
    evolution: Evolution, port: int, addr: str = "127.0.0.1", namespace: str = LOCAL_NAMESPACE
) -> RunMetrics:
    """`kubevolve run --metrics-port`: record `evolution` (its progress callback keeps working) and serve it."""
    metrics = RunMetrics(
        evolution.run_id,
        namespace,
        gpus=stage_gpus(evolution.task),
        slots=evolution.spec.parallelism.evaluators,
    ).bind(evolution)
    serve(port, addr)
    evolution.on_progress = metrics.tee(evolution.on_progress)
    return metrics
