"""The Grafana dashboards against Debian's real Prometheus server scraping a real kubevolve run.

`kubevolve run RUN.yaml --metrics-port P` runs as a subprocess: the toy task with a slow evaluator, and the LLM
Researcher and Analyzer talking to a scripted OpenAI-protocol server (so LLM, failure and retry metrics are real).
Prometheus scrapes it every second. Then every query of every panel of both dashboards, and every templating
variable, is run through Prometheus's HTTP API while the run is live (instant queries, as stat and table panels
do) and over the run's window (range queries, as time series panels do): each must return data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kit.openai_server import OpenAIServer, Reply
from tests.kit.prometheus import (
    BUILTINS,
    DASHBOARDS,
    METRIC,
    NO_PROMETHEUS,
    PROMETHEUS,
    free_port,
    http_get,
    panel_queries,
    query_problems,
    running_prometheus,
    substitute,
    variable_values,
)
from tests.kit.toy_task import write_task

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)

LOCAL_DASHBOARDS = {
    n: d for n, d in DASHBOARDS.items() if n != "kubevolve-operator.json"
}  # the operator's own
RUN = "dash-run"

SLOW_EVALUATOR = """\
import importlib.util
import time


def evaluate(program_path, stage):
    time.sleep(0.25)
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y = module.solve()
    return {"f": -(x - 3) ** 2 - (y + 1) ** 2, "x": x}
"""


def scripted_llm(body: dict[str, Any], index: int) -> Reply:
    """The Analyzer gets an insight; the Researcher gets rewrites, some crashing and some malformed."""
    if body["messages"][0]["content"].startswith("You are the Analyzer"):
        return Reply("INSIGHT: moving x toward 3 raised f.")
    if index % 5 == 3:
        return Reply("I would make x a little larger.")  # no MOTIVATION line: a recorded proposal failure
    x = "1 / 0" if index % 5 == 1 else f"{3 - 2.5 / (index + 1):.5f}"  # 1 / 0: fails in the quick stage
    y = f"{-1 + 1 / (index + 2):.5f}"
    return Reply(
        f"MOTIVATION: move x to {x}.\n```python\ndef solve():\n    x = {x}\n    y = {y}\n    return x, y\n```\n"
    )


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def live_run(tmp_path: Path, kubevolve_home: Path, metrics_port: int, prometheus):
    """A real `kubevolve run --metrics-port` with an LLM, alive until the test ends; yields its metrics URL.
    Prometheus is already scraping the port, so samples accumulate from the exporter's first second."""
    task = write_task(tmp_path / "toy", evaluator=SLOW_EVALUATOR)
    port = metrics_port
    with OpenAIServer(scripted_llm) as llm:
        spec = tmp_path / "run.yaml"
        spec.write_text(
            json.dumps(
                {
                    "task": str(task),
                    "name": RUN,
                    "llm": {
                        "endpoint": llm.url,
                        "model": "scripted-1",
                        "inputCostPerMtok": 1.0,
                        "outputCostPerMtok": 2.0,
                    },
                    "engineer": {"debugRetries": 1, "noveltyThreshold": 1.0},
                    "parallelism": {"evaluators": 2, "proposers": 2},
                    "budget": {"maxCandidates": 100000, "deadlineSeconds": 240},
                }
            )
        )
        env = {**os.environ, "KUBEVOLVE_HOME": str(kubevolve_home), "HF_HUB_OFFLINE": "1"}
        env["TRANSFORMERS_OFFLINE"] = "1"
        log = (tmp_path / "run.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubevolve", "run", str(spec), "--metrics-port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            deadline = time.monotonic() + 90  # the embedding model loads first (about 5 s)
            text = ""
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    text = http_get(url, timeout=2)
                except OSError:
                    text = ""
                if 'purpose="analyzer"' in text and "kubevolve_candidate_failures_total{" in text:
                    break
                time.sleep(0.2)
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert 'purpose="analyzer"' in text, f"no LLM metrics after 90 s:\n{text[-3000:]}"
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


@pytest.fixture
def prometheus(tmp_path: Path, metrics_port: int):
    with running_prometheus(tmp_path, f"127.0.0.1:{metrics_port}") as prom:
        yield prom, time.time()


def test_every_dashboard_query_returns_data_from_a_real_run(prometheus, live_run):
    prom, started = prometheus
    assert set(LOCAL_DASHBOARDS) == {"kubevolve-fleet.json", "kubevolve-run.json"}

    # wait until every metric the dashboards use has a few seconds of history, so rate() windows hold samples
    names = sorted(
        {n for d in LOCAL_DASHBOARDS.values() for _, expr in panel_queries(d) for n in METRIC.findall(expr)}
    )
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        history = {n: prom.instant(f'max(count_over_time({n}{{namespace="local"}}[1m]))') for n in names}
        if all(r and float(r[0]["value"][1]) >= 5 for r in history.values()):
            break
        time.sleep(0.5)
    up = prom.instant('up{job="kubevolve"}')
    assert up and up[0]["value"][1] == "1", f"the run's /metrics was not scraped: {up}"

    substitutions = {}
    for name, dashboard in LOCAL_DASHBOARDS.items():
        values = variable_values(prom, dashboard, prefer={"run": RUN})
        assert "local" in values["namespace"]
        if "run" in values:
            assert RUN in values["run"]
        chosen = {var: RUN if var == "run" else found[0] for var, found in values.items()}
        substitutions[name] = [chosen, {var: ".*" for var in values}]  # one run, and "All"

    # every query while the run is live; retried for a few seconds as a slow outcome shows up in rate()
    deadline = time.monotonic() + 20
    queries = {name: panel_queries(d) for name, d in LOCAL_DASHBOARDS.items()}
    problems = query_problems(prom, queries, substitutions)
    while problems and time.monotonic() < deadline:
        time.sleep(1)
        problems = query_problems(prom, queries, substitutions)
    assert not problems, "dashboard queries without data:\n" + "\n".join(
        f"{q}  ->  {p}" for q, p in problems.items()
    )

    # and as time series panels ask: a range query over the run's window
    end = time.time()
    for name, dashboard in LOCAL_DASHBOARDS.items():
        values = {name: RUN if name == "run" else "local" for name in ("namespace", "run")}
        for title, expr in panel_queries(dashboard):
            series = prom.range(substitute(expr, {**BUILTINS, **values}), started, end)
            assert series and any(len(s["values"]) >= 2 for s in series), f"{name} / {title}: no range data"

    count = sum(len(panel_queries(d)) for d in LOCAL_DASHBOARDS.values())
    assert count >= 30  # both dashboards have their panels


def test_dashboards_are_plain_grafana_json():
    for name, dashboard in DASHBOARDS.items():
        assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] == name.removesuffix(".json")
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert (
            variables["datasource"]["type"] == "datasource"
            and variables["datasource"]["query"] == "prometheus"
        )
        assert "namespace" in variables
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0
            for target in panel["targets"]:
                assert "kubevolve_" in target["expr"] and 'namespace=~"$namespace"' in target["expr"]
    assert "run" in {v["name"] for v in DASHBOARDS["kubevolve-run.json"]["templating"]["list"]}
