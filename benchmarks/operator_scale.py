"""The operator at scale against kmock: 50 EvolutionRuns at once, each taken to its candidate budget.

The real kopf operator reconciles every run (in this process); the emulated cluster runs in a second process:
kmock's API server and a stand-in kubelet that completes each Job with fake steps (the same store writes as
`kubevolve step`, in the same SQLite file, with no evaluation cost). So the figures are the operator's own:
Kubernetes API requests per candidate (by kind: Job creations and deletions, status patches, events, kopf's
own patches and watches) and the duration of one reconcile pass (store reads, decision, API calls), p50 and
p99, with the part not spent awaiting the API server. kmock is much slower than a real API server (it scans
every object it ever held on each request), so the first latency figure is an upper bound.

    python benchmarks/operator_scale.py [--runs 50] [--candidates 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

import kmock
import kopf
from rich.console import Console
from rich.table import Table

from kubevolve.runtime.kubernetes import API_VERSION, KIND
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.kube import Kube
from kubevolve.runtime.kubernetes.main import start_operator
from kubevolve.testing import RUNS, Api, ValidatingEmulator, declare_resources
from kubevolve.testing.kubelet import Kubelet

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
    if plural == "configmaps":  # an evaluation pod's candidate (handover.py)
        return "evaluation ConfigMap creations" if method == "POST" else "evaluation ConfigMap deletions"
    if plural == "pods":  # an evaluation pod's result (results.py): its pods, the judge's log
        return "evaluation result reads (pod lists, logs)"
    if plural == "secrets":
        return "Secret creations (judge seeds)"
    if method == "GET":
        return "kopf lists/watches/discovery"
    return f"kopf {method.lower()} {plural}".strip()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class CountingEmulator(ValidatingEmulator):
    """Counts the operator's requests by kind as they come (the request log itself is trimmed)."""

    counts: ClassVar[Counter] = Counter()
    keep_requests: ClassVar[int] = 200

    async def _handle(self, request):
        kind = classify(request)
        if kind:
            self.counts[kind] += 1
        return await super()._handle(request)


def cluster_process(conn, concurrency: int) -> None:
    """The emulated cluster, in its own process: kmock's API server and the fake kubelet."""
    asyncio.run(_cluster(conn, concurrency))


async def _cluster(conn, concurrency: int) -> None:
    async with CountingEmulator() as k, kmock.Server(k) as server:
        declare_resources(k, trainjobs=False)
        url = str(server.url).rstrip("/")
        api = Api(url)
        kubelet = Kubelet(
            api, mode="fake", concurrency=concurrency, score=lambda node: random.Random(node.id).random()
        )
        kubelet.start()
        conn.send(url)
        await asyncio.to_thread(conn.recv)  # until the benchmark is done
        conn.send(dict(CountingEmulator.counts))
        await kubelet.stop()
        await api.close()


async def phases(api: Api) -> tuple[Counter, int]:
    """Runs by phase, and the candidates they have finished."""
    url = f"{api.url}/apis/{RUNS.rsplit('/', 1)[0]}/namespaces/{NAMESPACE}/evolutionruns"
    async with api.session.get(url) as response:
        statuses = [o.get("status") or {} for o in (await response.json()).get("items", [])]
    finished = sum((s.get("candidates") or {}).get("total", 0) for s in statuses)
    return Counter(s.get("phase") for s in statuses), finished


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
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    cluster = ctx.Process(target=cluster_process, args=(child_conn, concurrency), daemon=True)
    cluster.start()
    url = await asyncio.to_thread(conn.recv)
    api = Api(url)
    operator = await start_operator(
        config, Kube.for_server(url), login=kopf.ConnectionInfo(server=url, insecure=True)
    )
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
    last_report = time.monotonic()
    while True:
        done, finished = await phases(api)
        if done.get("Succeeded", 0) + done.get("Failed", 0) == runs:
            break
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            print(f"{last_report - started:5.0f}s: {finished} candidates, runs {dict(done)}", file=sys.stderr)
        if time.monotonic() - started > 1800:
            raise TimeoutError(f"runs not finished after 30 minutes: {dict(done)}")
        await asyncio.sleep(0.5)
    wall = time.monotonic() - started
    stats = operator.ctx.stats
    durations = list(stats.durations)
    own = [d - w for d, w in zip(durations, stats.api_waits, strict=True)]
    await operator.stop()
    conn.send("done")
    requests = Counter(await asyncio.to_thread(conn.recv))
    await api.close()
    cluster.join(10)
    report(runs, candidates, wall, done, requests, durations, own)


def report(runs, candidates, wall, done, requests, durations, own) -> None:
    total = runs * candidates
    table = Table(title=f"operator at scale: {runs} concurrent runs x {candidates} candidates (kmock)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("runs Succeeded / Failed", f"{done.get('Succeeded', 0)} / {done.get('Failed', 0)}")
    table.add_row("candidates (each proposed, evaluated, analysed)", f"{total}")
    table.add_row("wall time", f"{wall:.1f} s ({total / wall:.1f} candidates/s)")
    table.add_row("API requests by the operator", f"{sum(requests.values())}")
    table.add_row("API requests per candidate", f"{sum(requests.values()) / total:.2f}")
    for kind, count in sorted(requests.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {kind}", f"{count / total:.2f}")
    table.add_row("reconcile passes", f"{len(durations)} ({len(durations) / total:.2f} per candidate)")
    table.add_row(
        "reconcile latency p50 / p99",
        f"{ms(statistics.median(durations))} / {ms(percentile(durations, 0.99))}",
    )
    table.add_row(
        "  not awaiting the API: p50 / p99", f"{ms(statistics.median(own))} / {ms(percentile(own, 0.99))}"
    )
    Console().print(table)


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=10, help="maxCandidates of each run")
    parser.add_argument(
        "--kubelet-concurrency", type=int, default=16, help="Jobs the fake kubelet runs at once"
    )
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.candidates, args.kubelet_concurrency))
