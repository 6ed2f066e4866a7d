"""The metrics recorder: values after observing nodes, the Analyzer's late LLM requests, bounded labels (never a
node id), the exporter over HTTP (checked by `promtool check metrics` where it is installed), and a real run."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import load_task
from kubevolve.loop.research.offline import OfflineProposer
from kubevolve.observe.metrics import Metrics, metric_reason, serve
from kubevolve.observe.progress import RunProgress
from kubevolve.observe.run_metrics import RunMetrics
from kubevolve.runtime.local import Evolution

ALLOWED_LABELS = {
    "namespace",
    "run",
    "outcome",
    "reason",
    "stage",
    "model",
    "purpose",
    "type",
    "phase",
    "result",
    "job",
}


def fresh() -> tuple[CollectorRegistry, Metrics]:
    registry = CollectorRegistry()
    return registry, Metrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    assert got is not None, f"no sample {name}{labels}"
    return got


def llm_entry(purpose: str, prompt: int, completion: int, cost: float, model: str = "m1") -> dict:
    return {
        "purpose": purpose,
        "model": model,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": cost,
        "messages": [],
        "completion": "",
    }


def node(
    stage: Stage,
    *,
    error: str = "",
    failure: FailureKind | None = None,
    score: float | None = None,
    **fields,
) -> Node:
    return Node(run_id="r1", code="x = 1", stage=stage, error=error, failure=failure, score=score, **fields)


def test_values_after_observing_nodes():
    registry, m = fresh()
    rec = RunMetrics("r1", "lab-a", gpus={"quick": 0, "full": 2}, slots=4, metrics=m)
    progress = RunProgress("r1")
    good = node(
        Stage.EVALUATED,
        score=1.5,
        timings={"propose": 0.2, "static": 0.001, "quick": 1.5, "full": 10.0},
        transcript=[llm_entry("researcher", 100, 20, 0.01)],
    )
    crashed = node(
        Stage.FAILED_QUICK,
        error="ZeroDivisionError: division by zero",
        failure=FailureKind.RAISED,
        timings={"propose": 0.4, "quick": 0.5},
        transcript=[llm_entry("debug retry", 50, 10, 0.005)],
    )
    timeout = node(
        Stage.FAILED_FULL,
        error="full stage: timeout: 3s",
        failure=FailureKind.TIMEOUT,
        timings={"quick": 1, "full": 3},
    )
    static = node(
        Stage.REJECTED_STATIC,
        error="syntax error at line 3: invalid syntax",
        failure=FailureKind.SYNTAX_ERROR,
    )
    for n in (good, crashed, timeout, static):
        progress.record(n)
        rec(progress, n)

    labels = {"namespace": "lab-a", "run": "r1"}
    assert value(registry, "kubevolve_candidates_total", **labels, outcome="evaluated") == 1
    # every outcome exists from the start (at 0), so increase() also counts its first occurrence
    assert value(registry, "kubevolve_candidates_total", **labels, outcome="rejected_novelty") == 0

    def failures(outcome: str, reason: str) -> float:
        return value(registry, "kubevolve_candidate_failures_total", **labels, outcome=outcome, reason=reason)

    assert failures("failed_quick", "raised") == 1
    assert failures("failed_full", "timeout") == 1
    assert failures("rejected_static", "syntax_error") == 1
    assert value(registry, "kubevolve_best_score", **labels) == 1.5
    assert value(registry, "kubevolve_evaluation_duration_seconds_count", **labels, stage="quick") == 3
    assert value(registry, "kubevolve_evaluation_duration_seconds_sum", **labels, stage="full") == 13.0
    assert (
        value(registry, "kubevolve_evaluation_gpu_seconds_total", **labels, stage="full") == 26.0
    )  # × 2 GPUs
    assert value(registry, "kubevolve_evaluation_gpu_seconds_total", **labels, stage="quick") == 0.0
    assert value(registry, "kubevolve_proposal_duration_seconds_count", **labels) == 2
    assert value(registry, "kubevolve_proposal_duration_seconds_sum", **labels) == pytest.approx(0.6)
    llm = {**labels, "model": "m1"}
    assert value(registry, "kubevolve_llm_requests_total", **llm, purpose="researcher") == 1
    assert value(registry, "kubevolve_llm_requests_total", **llm, purpose="debug_retry") == 1
    assert value(registry, "kubevolve_llm_tokens_total", **llm, purpose="researcher", type="prompt") == 100
    assert value(registry, "kubevolve_llm_tokens_total", **llm, purpose="researcher", type="completion") == 20
    assert value(registry, "kubevolve_llm_cost_usd_total", **llm, purpose="debug_retry") == 0.005
    assert value(registry, "kubevolve_evaluator_slots", **labels) == 4
    assert value(registry, "kubevolve_runs", namespace="lab-a", phase="Running") == 1


def test_the_analyzers_late_request_is_counted_once():
    registry, m = fresh()
    rec = RunMetrics("r1", metrics=m)
    progress = RunProgress("r1")
    n = node(Stage.EVALUATED, score=1.0, transcript=[llm_entry("researcher", 10, 5, 0.001)])
    rec(progress, n)
    # the runner analyses a node after committing it: the Analyzer's request is appended to the same node
    n.transcript.append(llm_entry("analyzer", 40, 8, 0.002, model="cheap"))
    n.llm["analysis_cost_usd"] = 0.002
    n.insight_id = "insight-1"
    rec(progress, None)  # the runner's last callback, after every analysis
    rec(progress, None)
    labels = {"namespace": "local", "run": "r1", "model": "cheap", "purpose": "analyzer"}
    assert value(registry, "kubevolve_llm_requests_total", **labels) == 1
    assert value(registry, "kubevolve_llm_cost_usd_total", **labels) == 0.002
    assert value(registry, "kubevolve_llm_tokens_total", **labels, type="prompt") == 40


def test_labels_are_bounded_and_never_node_ids():
    def series_after(count: int) -> tuple[set[tuple], set[str]]:
        registry, m = fresh()
        rec = RunMetrics("r1", metrics=m)
        progress = RunProgress("r1")
        ids = set()
        for i in range(count):
            kinds = [
                node(
                    Stage.EVALUATED,
                    score=float(i),
                    timings={"propose": 0.1, "quick": 0.2},
                    transcript=[llm_entry("researcher", 1, 1, 0.0)],
                ),
                node(
                    Stage.FAILED_QUICK,
                    error=f"ValueError: bad value {i} at 0x{i:x}",
                    failure=FailureKind.RAISED,
                    timings={"quick": 0.1},
                ),
                node(
                    Stage.REJECTED_NOVELTY, error=f"identical to node {i:016x}", failure=FailureKind.DUPLICATE
                ),
                node(
                    Stage.FAILED_QUICK,
                    error=f"Error{i}Thing: candidate-made class",
                    failure=FailureKind.RAISED,
                ),
            ]
            for n in kinds:
                ids.add(n.id)
                progress.record(n)
                rec(progress, n)
        series = set()
        for family in registry.collect():
            for sample in family.samples:
                assert set(sample.labels) - {"le"} <= ALLOWED_LABELS, sample
                assert not set(sample.labels.values()) & ids, f"a node id became a label: {sample}"
                series.add((sample.name, tuple(sorted(sample.labels.items()))))
        return series, ids

    few, _ = series_after(3)
    many, _ = series_after(300)
    assert many == few  # 1200 candidates make no more series than 12
    assert len(many) < 150


def test_metric_reason_is_the_stored_kind_never_the_message():
    for kind in FailureKind:
        assert metric_reason(node(Stage.FAILED_QUICK, error="timeout: 5 s", failure=kind)) == kind.value
    # a failed node that carries no kind (written by an older kubevolve, not migrated) is counted, as unknown
    assert metric_reason(node(Stage.FAILED_QUICK, error="WeirdCandidateError: x")) == "unknown"


def test_phase_moves_and_remove_drops_the_runs_series():
    registry, m = fresh()
    rec = RunMetrics("r1", "ns", metrics=m)
    rec(RunProgress("r1"), None)
    assert value(registry, "kubevolve_runs", namespace="ns", phase="Running") == 1
    rec.set_phase("Succeeded")
    assert value(registry, "kubevolve_runs", namespace="ns", phase="Running") == 0
    assert value(registry, "kubevolve_runs", namespace="ns", phase="Succeeded") == 1
    rec.remove()
    assert value(registry, "kubevolve_runs", namespace="ns", phase="Succeeded") == 0
    gone = {"namespace": "ns", "run": "r1", "outcome": "evaluated"}
    assert registry.get_sample_value("kubevolve_candidates_total", gone) is None


def test_operator_helpers():
    registry, m = fresh()
    m.observe_reconcile("lab-a", 0.03)
    m.observe_reconcile("lab-a", 0.2, result="error")
    m.set_runs_by_phase("lab-a", {"Running": 2, "Pending": 1})
    m.admission_wait.labels("lab-a", "r1", "evaluate").observe(12.0)
    assert value(registry, "kubevolve_operator_reconciles_total", namespace="lab-a", result="ok") == 1
    assert value(registry, "kubevolve_operator_reconcile_duration_seconds_count", namespace="lab-a") == 2
    assert value(registry, "kubevolve_runs", namespace="lab-a", phase="Running") == 2
    assert value(registry, "kubevolve_runs", namespace="lab-a", phase="Failed") == 0
    assert (
        value(registry, "kubevolve_admission_wait_seconds_count", namespace="lab-a", run="r1", job="evaluate")
        == 1
    )


def test_a_real_run_is_counted_and_served(toy_task, store, tmp_path):
    registry, m = fresh()
    spec = RunSpec(task=str(toy_task), name="real", budget={"maxCandidates": 15})
    task = load_task(toy_task)
    evolution = Evolution(spec, task, store, OfflineProposer(), tmp_path / "work")
    rec = RunMetrics("real", gpus=1, metrics=m).bind(evolution.pool)
    evolution.observers.append(rec)
    asyncio.run(evolution.run())

    labels = {"namespace": "local", "run": "real"}
    for stage, count in store.count_nodes("real").items():
        assert value(registry, "kubevolve_candidates_total", **labels, outcome=str(stage)) == count
    assert value(registry, "kubevolve_best_score", **labels) == store.best_node("real").score
    evaluated = [n for n in store.list_nodes("real") if "quick" in n.timings]
    assert value(registry, "kubevolve_evaluation_duration_seconds_count", **labels, stage="quick") == len(
        evaluated
    )
    gpu_seconds = value(registry, "kubevolve_evaluation_gpu_seconds_total", **labels, stage="quick")
    assert gpu_seconds == pytest.approx(sum(n.timings["quick"] for n in evaluated))  # 1 GPU per evaluation
    assert (
        value(registry, "kubevolve_runs", namespace="local", phase="Succeeded") == 1
    )  # the stored final phase
    assert value(registry, "kubevolve_evaluator_slots", **labels) == spec.parallelism.evaluators
    assert 0 < value(registry, "kubevolve_evaluator_occupancy_ratio", **labels) <= 1
    assert value(registry, "kubevolve_evaluator_slots_busy", **labels) == 0  # the run is over

    port = serve(0, "127.0.0.1", registry)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'kubevolve_candidates_total{namespace="local",outcome="evaluated",run="real"}' in text
    assert "_created" not in text
    promtool = shutil.which("promtool")
    if promtool:  # Prometheus's own linter of metric names, types, units and help texts
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_every_metric_follows_the_naming_conventions():
    registry, _ = fresh()
    families = list(registry.collect())
    assert len(families) == 16
    for family in families:
        assert family.name.startswith("kubevolve_"), family.name
        assert family.documentation, family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # prometheus_client appends _total to the samples
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name


def test_kubevolve_run_metrics_port(toy_task):
    from typer.testing import CliRunner

    from kubevolve.cli.app import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(
        app, ["run", str(toy_task), "--max-candidates", "6", "--metrics-port", str(port), "--json"]
    )
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["id"]
    # the exporter thread outlives the CLI call here (in a real `kubevolve run` it ends with the process)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    counts = re.findall(
        rf'kubevolve_candidates_total\{{namespace="local",outcome="\w+",run="{run_id}"\}} (\S+)', text
    )
    assert sum(float(c) for c in counts) == 6
    assert 'kubevolve_runs{namespace="local",phase="Succeeded"}' in text

    again = CliRunner().invoke(app, ["run", str(toy_task), "--new", "--metrics-port", str(port)])
    assert again.exit_code == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in again.output
