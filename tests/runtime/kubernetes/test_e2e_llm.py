"""End to end with an LLM against kmock: the proposal and analysis pods get the LLM key from a Secret in the
lab's namespace (resolved as a kubelet does), talk to a real OpenAI-protocol server through the openai SDK,
and the operator exports the run's LLM usage from the store (where Debian's Prometheus is installed, the run
dashboard's LLM panels are queried against it). The key never reaches the store."""

from __future__ import annotations

import asyncio
import base64
import contextlib

from prometheus_client import REGISTRY, start_http_server

from kubevolve.core.models import Stage
from kubevolve.store import open_store
from kubevolve.testing import RUNS
from kubevolve.testing.kubelet import Kubelet
from tests.kit.openai_server import OpenAIServer, Reply
from tests.kit.prometheus import DASHBOARDS, PROMETHEUS, panel_queries, query_problems, running_prometheus
from tests.kit.toy_task import write_task
from tests.runtime.kubernetes.conftest import NAMESPACE, run_manifest, run_status, until

RUN = "llm-e2e"
KEY = "sk-lab-secret-0123"
CANDIDATES = 3  # the initial program and two proposals


def researcher_and_analyzer(body: dict, index: int) -> Reply:
    if body["messages"][0]["content"].startswith("You are the Analyzer"):
        return Reply("INSIGHT: moving x toward 3 raised f.")
    x = 3 - 2 / (index + 2)
    return Reply(
        f"MOTIVATION: move x to {x:.4f}.\n```python\ndef solve():\n    x = {x:.4f}\n    y = -1.0\n    return x, y\n```\n"
    )


async def test_llm_key_from_a_secret_reaches_only_the_llm_pods(kmock, api, operator, tmp_path, store_url):
    write_task(tmp_path / "toy")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "llm-key", "namespace": NAMESPACE},
        "data": {"api-key": base64.b64encode(KEY.encode()).decode()},
    }
    await api.create("v1/secrets", secret)
    kubelet = Kubelet(api, mode="process", concurrency=2)
    kubelet.start()
    await operator.start()
    httpd, _ = start_http_server(0, "127.0.0.1", registry=REGISTRY)  # the operator's /metrics
    with contextlib.ExitStack() as stack:
        prom = (  # where Debian's Prometheus is installed, it scrapes the operator during the run
            stack.enter_context(running_prometheus(tmp_path, f"127.0.0.1:{httpd.server_address[1]}"))
            if PROMETHEUS
            else None
        )
        llm = stack.enter_context(OpenAIServer(researcher_and_analyzer))
        spec = {
            "budget": {"maxCandidates": CANDIDATES},
            "parallelism": {"evaluators": 1, "proposers": 1},
            "llm": {
                "endpoint": llm.url,
                "model": "scripted-1",
                "inputCostPerMtok": 1.0,
                "outputCostPerMtok": 2.0,
                "apiKeySecret": {"name": "llm-key", "key": "api-key"},
            },
        }
        try:
            await api.create(RUNS, run_manifest(RUN, "toy", **spec))
            await until(lambda: run_status(kmock, RUN).get("phase") == "Succeeded", 240, "Succeeded")
            store = open_store(store_url, tenant=NAMESPACE)
            await until(  # the analyses of the last candidates finish after the budget is reached
                lambda: all(n.insight_id for n in store.list_nodes(RUN)), 120, "every analysis"
            )
            if prom is not None:  # the run dashboard's LLM panels, fed by the operator from the store
                llm_panels = [
                    (t, e) for t, e in panel_queries(DASHBOARDS["kubevolve-run.json"]) if "llm" in e
                ]
                assert len(llm_panels) >= 4
                chosen = {"namespace": NAMESPACE, "run": RUN}

                def problems() -> dict[str, str]:
                    return query_problems(prom, {"run": llm_panels}, {"run": [chosen]})

                await until(lambda: asyncio.to_thread(lambda: not problems()), 60, "LLM panels with data")
        finally:
            await kubelet.stop()
            httpd.shutdown()

    assert llm.requests and set(llm.authorization) == {f"Bearer {KEY}"}
    nodes = store.list_nodes(RUN)
    proposed = [n for n in nodes if n.parent_ids]
    assert len(nodes) == CANDIDATES and len(proposed) == CANDIDATES - 1
    assert all(n.motivation.startswith("move x to") and n.transcript for n in proposed)
    assert all(n.stage is Stage.EVALUATED and n.insight_id for n in nodes)
    assert store.best_node(RUN).metrics["f"] > -2  # the proposals improved on the initial program (-8.5)
    assert KEY.encode() not in (tmp_path / "cluster-store.db").read_bytes()

    def metric(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"namespace": NAMESPACE, "run": RUN, **labels}) or 0.0

    entries = [e for n in nodes for e in n.transcript]
    by_purpose = {p: sum(1 for e in entries if e["purpose"] == p) for p in ("researcher", "analyzer")}
    assert by_purpose == {"researcher": CANDIDATES - 1, "analyzer": CANDIDATES}
    await until(
        lambda: metric("kubevolve_llm_requests_total", model="scripted-1", purpose="analyzer") == CANDIDATES,
        15,
        "metrics",
    )
    assert metric("kubevolve_llm_requests_total", model="scripted-1", purpose="researcher") == CANDIDATES - 1
    cost = sum(e["cost_usd"] for e in entries)
    assert (
        cost > 0
        and abs(
            sum(metric("kubevolve_llm_cost_usd_total", model="scripted-1", purpose=p) for p in by_purpose)
            - cost
        )
        < 1e-9
    )
