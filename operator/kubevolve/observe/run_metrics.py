"""One run's series in the metric families of `metrics.py`: an observer of a local run, and the recorder the
operator feeds from the store.

    metrics = RunMetrics("packing-1", namespace="lab-a")
    serve(9108)                         # /metrics on 127.0.0.1:9108
    evolution = Evolution(..., observers=[metrics.bind(pool)])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kubevolve.core.models import Node, RunPhase, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import Task
from kubevolve.loop.analyze.analyzer import ANALYSED_STAGES
from kubevolve.observe.metrics import (
    LOCAL_NAMESPACE,
    METRICS,
    Metrics,
    drop_run_series,
    metric_reason,
    serve,
    stage_gpus,
)
from kubevolve.observe.progress import RunObserver, RunProgress

EVALUATION_STAGES = ("quick", "full")
_PURPOSES = {
    "researcher": "researcher",
    "debug retry": "debug_retry",
    "analyzer": "analyzer",
    "llm judge": "llm_judge",
}


class Slots(Protocol):
    """Evaluation slots read at scrape time (an EvaluatorPool): how many, how many busy, and the occupancy."""

    size: int

    def busy(self) -> int: ...

    def occupancy(self) -> float: ...


class RunningEvolution(Protocol):
    """What `serve_run_metrics` reads of a local run (runtime.local's `Evolution`), described here so that
    observe/ needs nothing from runtime/."""

    @property
    def run_id(self) -> str: ...
    @property
    def spec(self) -> RunSpec: ...
    @property
    def task(self) -> Task: ...
    @property
    def pool(self) -> Slots: ...
    @property
    def observers(self) -> list[RunObserver]: ...


class RunMetrics:
    """Records one run's progress into the metric families: a `RunObserver` of a local run.

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
        self._slots: Slots | None = None  # read live at scrape time, once bound
        self._max_pending = 1000  # analyses in flight are far fewer; one that failed is dropped from here
        for stage in Stage:  # every outcome exists from the start, so increase() counts the first one too
            if stage is not Stage.PROPOSED:
                self.m.candidates.labels(*self._labels, str(stage))
        if slots is not None:
            self.m.slots.labels(*self._labels).set(slots)

    # ---- observer -----------------------------------------------------------------------------------
    def __call__(self, progress: RunProgress, node: Node | None) -> None:
        if node is not None:
            self.observe_node(node)
        self.observe_progress(progress)
        if node is None and progress.phase:  # the run ended
            self.set_phase(progress.phase)

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
        if self._slots is None:
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

    def bind(self, slots: Slots) -> RunMetrics:
        """Read the evaluator slots (total, busy) and occupancy live at scrape time, e.g. from a run's pool."""
        self._slots = slots
        labels = self._labels

        def live(read: Callable[[Slots], float]) -> Callable[[], float]:
            def value() -> float:
                try:
                    return float(read(slots))
                except Exception:  # a scrape must never fail because the pool is starting or closing
                    return 0.0

            return value

        self.m.slots.labels(*labels).set(slots.size)
        self.m.slots_busy.labels(*labels).set_function(live(lambda s: max(0, s.busy())))
        self.m.occupancy.labels(*labels).set_function(live(lambda s: s.occupancy()))
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


def serve_run_metrics(
    evolution: RunningEvolution, port: int, addr: str = "127.0.0.1", namespace: str = LOCAL_NAMESPACE
) -> RunMetrics:
    """`kubevolve run --metrics-port`: record `evolution` (as one more of its observers) and serve it."""
    metrics = RunMetrics(
        evolution.run_id,
        namespace,
        gpus=stage_gpus(evolution.task),
        slots=evolution.spec.parallelism.evaluators,
    ).bind(evolution.pool)
    serve(port, addr)
    evolution.observers.append(metrics)
    return metrics
