"""The dashboards on a cluster: Debian's real Prometheus scrapes the operator's /metrics while it runs an
EvolutionRun against kmock (fake steps), and every query of the operator dashboard, and of the run dashboard
the operator feeds from the store, returns data. The run dashboard's LLM panels are left out here (the fake
steps call no LLM; tests/test_prometheus_dashboards.py covers them with a real LLM run)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY, start_http_server

from kubevolve.testing import RUNS
from kubevolve.testing.kubelet import Kubelet
from tests.kit.prometheus import (
    DASHBOARDS,
    NO_PROMETHEUS,
    PROMETHEUS,
    panel_queries,
    query_problems,
    running_prometheus,
    variable_values,
)
from tests.kit.toy_task import write_task
from tests.runtime.kubernetes.conftest import NAMESPACE, run_manifest, run_status, until

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
RUN = "dash-op"


def fails_sometimes(job: dict) -> str | None:
    """Every seventh candidate's evaluation pod is OOM-killed: failures with a reason for the failure panels."""
    name = job["metadata"]["name"]
    return "OOMKilled" if name.startswith(f"{RUN}-eval-") and int(name.split("-")[-1][:5]) % 7 == 3 else None


async def test_operator_and_run_dashboards_get_data_from_the_operator(kmock, api, operator, tmp_path):
    write_task(tmp_path / "toy")
    httpd, _ = start_http_server(0, "127.0.0.1", registry=REGISTRY)
    kubelet = Kubelet(api, mode="fake", concurrency=4)
    kubelet.fail = fails_sometimes
    try:
        with running_prometheus(tmp_path, f"127.0.0.1:{httpd.server_address[1]}") as prom:
            kubelet.start()
            await operator.start()
            spec = {
                "budget": {"maxCandidates": 100000},
                "parallelism": {"evaluators": 3, "proposers": 2},
                "failurePolicy": {"maxAttempts": 1, "maxFailedJobs": 100000},
            }
            await api.create(RUNS, run_manifest(RUN, "toy", **spec))
            await until(
                lambda: run_status(kmock, RUN).get("candidates", {}).get("failedQuick"), 60, "a failure"
            )

            dashboards = {
                "kubevolve-operator.json": panel_queries(DASHBOARDS["kubevolve-operator.json"]),
                "kubevolve-run.json": [
                    (title, expr)
                    for title, expr in panel_queries(DASHBOARDS["kubevolve-run.json"])
                    if "llm" not in expr
                ],
            }
            assert (
                len(dashboards["kubevolve-run.json"]) >= 12
                and len(dashboards["kubevolve-operator.json"]) >= 8
            )

            def check() -> dict[str, str]:
                substitutions = {}
                for name in dashboards:
                    try:  # the first scrapes may not have come yet
                        values = variable_values(
                            prom, DASHBOARDS[name], prefer={"namespace": NAMESPACE, "run": RUN}
                        )
                    except AssertionError as err:
                        return {name: str(err)}
                    assert NAMESPACE in values["namespace"]
                    chosen = {var: RUN if var == "run" else NAMESPACE for var in values}
                    substitutions[name] = [chosen, {var: ".*" for var in values}]  # one run, and "All"
                return query_problems(prom, dashboards, substitutions)

            # queried while the run is live, as a lab would look at it; rate() windows fill within seconds
            deadline = time.monotonic() + 60
            problems = await asyncio.to_thread(check)
            while problems and time.monotonic() < deadline:
                await asyncio.sleep(1)
                problems = await asyncio.to_thread(check)
            assert not problems, "dashboard queries without data:\n" + "\n".join(
                f"{q}  ->  {p}" for q, p in problems.items()
            )
            up = await asyncio.to_thread(prom.instant, 'up{job="kubevolve"}')
            assert up and up[0]["value"][1] == "1"
    finally:
        await kubelet.stop()
        httpd.shutdown()
