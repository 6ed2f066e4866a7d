"""Debian's real Prometheus server for the dashboard tests: start it scraping a target, and run the panel
queries of a Grafana dashboard through its HTTP API as Grafana would (variables resolved by label_values)."""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.paths import REPO

PROMETHEUS = shutil.which("prometheus")
NO_PROMETHEUS = (
    "Debian's `prometheus` server is not on PATH (apt-get install prometheus; .ci/run installs it)"
)
DASHBOARDS = {p.name: json.loads(p.read_text()) for p in sorted((REPO / "dashboards").glob("*.json"))}
METRIC = re.compile(r"\bkubevolve_\w+")
BUILTINS = {"__rate_interval": "30s", "__range": "1h", "__interval": "1s"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


class Prometheus:
    def __init__(self, base: str):
        self.base = base

    def api(self, path: str, **params: str) -> Any:
        reply = json.loads(http_get(f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"))
        assert reply["status"] == "success", reply
        return reply["data"]

    def instant(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def range(self, expr: str, start: float, end: float) -> list[dict]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        return self.api(f"label/{label}/values", **{"match[]": match})


@contextlib.contextmanager
def running_prometheus(workdir: Path, target: str) -> Iterator[Prometheus]:
    """A Prometheus scraping `target` (host:port) every second, ready when this yields."""
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: kubevolve\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if "Ready" in http_get(f"{base}/-/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(
                "prometheus did not become ready:\n" + (workdir / "prometheus.log").read_text()[-3000:]
            )
        yield Prometheus(base)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, rows' nested panels included."""
    out = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            if inner["type"] == "row":
                continue
            assert inner.get("targets"), f"panel {inner['title']!r} has no query"
            out += [(inner["title"], t["expr"]) for t in inner["targets"]]
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        expr = re.sub(r"\$\{" + name + r"\}|\$" + name + r"\b", values[name], expr)
    assert "$" not in expr, f"an unsubstituted variable in {expr}"
    return expr


def variable_values(prom: Prometheus, dashboard: dict, prefer: dict[str, str]) -> dict[str, list[str]]:
    """Resolve each query variable as Grafana does for label_values(): the label values API. A later
    variable's query sees the earlier ones set to the `prefer`red value where it exists, else the first."""
    chosen: dict[str, str] = {}
    values: dict[str, list[str]] = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
        assert match, var["definition"]
        selector = substitute(match.group(1), chosen)
        found = prom.label_values(match.group(2), selector)
        assert found, f"variable ${var['name']} ({var['definition']}) has no values"
        values[var["name"]] = found
        wanted = prefer.get(var["name"])
        chosen[var["name"]] = wanted if wanted in found else found[0]
    return values


def query_problems(
    prom: Prometheus,
    queries: dict[str, list[tuple[str, str]]],
    substitutions: dict[str, list[dict[str, str]]],
) -> dict[str, str]:
    """Every query ({dashboard: [(title, expr)]}) under each of its dashboard's substitutions, as an instant
    query; {query: problem} for those without a finite value."""
    problems = {}
    for name, panels in queries.items():
        for values in substitutions[name]:
            for title, expr in panels:
                query = substitute(expr, {**BUILTINS, **values})
                result = prom.instant(query)
                if not [s for s in result if math.isfinite(float(s["value"][1]))]:
                    problems[f"{name} / {title}: {query}"] = (
                        "no data" if not result else f"only NaN: {result}"
                    )
    return problems
