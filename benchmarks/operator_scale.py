"""The operator at scale against kmock: 50 EvolutionRuns at once, each taken to its candidate budget.

The real kopf operator (in its own thread, as it would be in its own pod) reconciles every run; a stand-in
kubelet completes each Job with in-process fake steps (same store writes as `kubevolve step`, no evaluation
cost), so the figures are the operator's own: Kubernetes API requests per candidate (split by kind: kopf's
watches and patches, Job creations and deletions, status patches, events) and the duration of one reconcile
pass (store reads, decision, API calls), p50 and p99.

    python benchmarks/operator_scale.py [--runs 50] [--candidates 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import kmock
from rich.console import Console
from rich.table import Table

from kubevolve.k8s import API_VERSION, KIND
from kubevolve.k8s.config import OperatorConfig
from kubevolve.k8s.kube import Kube
from kubevolve.k8s.main import start_operator
from kubevolve.k8s.testing import RUNS, Api, ValidatingEmulator, declare_resources, live_objects
from kubevolve.k8s.testing.kubelet import Kubelet

NAMESPACE = "bench"
TOY_TASK = """\
name: toy
description: benchmark task (the fake steps never run it)
metric: f
stages: {quick: {timeoutSeconds: 5}}
"""
TOY_PROGRAM = "# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n"
TOY_EVALUATOR = "def evaluate(program_path, stage):\n    return {'f': 1.0}\n"


def classify(request) -> str | None:
    """Which part of the operator made a request (None: the benchmark's own kubelet and client)."""
    agent = request.headers.get("User-Agent", "")
    if not (agent.startswith("kopf") or agent.startswith("OpenAPI-Generator")):
        return None
    plural = request.resource.plural if request.resource else ""
    method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
    if plural == "events":
        return "event posts"
    if plural == "jobs" and method == "POST":
        return "Job creations"
    if plural == "jobs" and method == "DELETE":
        return "Job deletions"
    if plural == "evolutionruns" and request.subresource == "status":
        return "status patches"
    if method == "GET":
        return "kopf lists/watches/discovery"
    return f"kopf {method.lower()} {plural}".strip()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def main(runs: int, candidates: int, concurrency: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kubevolve-opscale-"))
    (tmp / "toy").mkdir()
    (tmp / "toy/task.yaml").write_text(TOY_TASK)
    (tmp / "toy/initial.py").write_text(TOY_PROGRAM)
    (tmp / "toy/evaluate.py").write_text(TOY_EVALUATOR)
    config = OperatorConfig(
        image="kubevolve:bench",
        store_url=f"sqlite:///{tmp / 'store.db'}",
        task_root=str(tmp),
        resync_seconds=10.0,
        idle_resync_seconds=60.0,
    )
    async with ValidatingEmulator() as k, kmock.Server(k) as server:
        declare_resources(k, trainjobs=False)
        url = str(server.url).rstrip("/")
        api = Api(url)
        kubelet = Kubelet(k, api, mode="fake", concurrency=concurrency)
        kubelet.start()
        login = __import__("kopf").ConnectionInfo(server=url, insecure=True)
        operator = await start_operator(config, Kube.for_server(url), login=login)
        started = time.monotonic()
        for i in range(runs):
            body = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": f"run-{i:03d}", "namespace": NAMESPACE},
                "spec": {
                    "task": "toy",
                    "budget": {"maxCandidates": candidates},
                    "parallelism": {"evaluators": 2, "proposers": 2},
                },
            }
            await api.create(RUNS, body)
        while True:
            phases = Counter((o.get("status") or {}).get("phase") for o in live_objects(k, RUNS, NAMESPACE))
            if phases.get("Succeeded", 0) + phases.get("Failed", 0) == runs:
                break
            if time.monotonic() - started > 1800:
                raise TimeoutError(f"runs not finished after 30 minutes: {dict(phases)}")
            await asyncio.sleep(0.5)
        wall = time.monotonic() - started
        durations = list(operator.ctx.stats.durations)
        requests = Counter(c for r in list(k._requests) if (c := classify(r)))
        await kubelet.stop()
        await operator.stop()
        await api.close()

    total = runs * candidates
    console = Console()
    table = Table(title=f"operator at scale: {runs} concurrent runs x {candidates} candidates (kmock)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("runs Succeeded / Failed", f"{phases.get('Succeeded', 0)} / {phases.get('Failed', 0)}")
    table.add_row("candidates (proposed, evaluated, analysed)", f"{total}")
    table.add_row("wall time", f"{wall:.1f} s ({total / wall:.1f} candidates/s)")
    table.add_row("API requests by the operator", f"{sum(requests.values())}")
    table.add_row("API requests per candidate", f"{sum(requests.values()) / total:.2f}")
    for kind, count in sorted(requests.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {kind}", f"{count / total:.2f} per candidate")
    table.add_row("reconcile passes", f"{len(durations)} ({len(durations) / total:.2f} per candidate)")
    table.add_row("reconcile latency p50", f"{1000 * statistics.median(durations):.1f} ms")
    table.add_row("reconcile latency p99", f"{1000 * percentile(durations, 0.99):.1f} ms")
    table.add_row("reconcile latency max", f"{1000 * max(durations):.1f} ms")
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=20, help="maxCandidates of each run")
    parser.add_argument(
        "--kubelet-concurrency", type=int, default=16, help="Jobs the fake kubelet runs at once"
    )
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.candidates, args.kubelet_concurrency))
