"""`kubevolve report` on a real run, loaded in headless Chromium over the DevTools protocol: the page must load
with no console error, no exception and no network request, and show its plots with one mark per candidate.
A full-page screenshot is saved to test-artifacts/report.png."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kubevolve.cli.app import app
from kubevolve.core.models import Stage
from kubevolve.observe.report.page import load_run, render_report
from kubevolve.store.sqlite import SQLiteStore
from tests.kit.paths import REPO
from tests.kit.toy_task import write_task

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

# fails for small x, so the run has failures to plot; reports x and y as extra metrics for the scatter
EVALUATOR = """\
import importlib.util


def evaluate(program_path, stage):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y = module.solve()
    if x < 0.47:
        raise ValueError(f"x = {x} is too small")
    return {"f": -(x - 3) ** 2 - (y + 1) ** 2, "x": x, "y": y}
"""

runner = CliRunner()


@pytest.fixture
def report_run(tmp_path: Path, kubevolve_home: Path) -> tuple[Path, str]:
    """A real run (three MAP-Elites islands, some failures) through the CLI; returns (store path, run id)."""
    task = write_task(tmp_path / "toy", evaluator=EVALUATOR)
    spec = tmp_path / "run.yaml"
    spec.write_text(
        json.dumps(
            {
                "task": str(task),
                "name": "report-run",
                "seed": 3,
                "sampler": {
                    "kind": "map_elites",
                    "islands": 3,
                    "migrationInterval": 10,
                    "features": [{"name": "x", "min": 0, "max": 4, "bins": 8}],
                },
                "budget": {"maxCandidates": 60},
            }
        )
    )
    result = runner.invoke(app, ["run", str(spec), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return kubevolve_home / "kubevolve.db", "report-run"


def test_report_command_writes_a_self_contained_page(report_run, tmp_path):
    out = tmp_path / "out" / "report.html"
    result = runner.invoke(app, ["report", "--out", str(out)], catch_exceptions=False)  # the latest run
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "report-run" in page and "<svg" in page
    # nothing to fetch: no external script, style, image or font, and a CSP that forbids loading any
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page)) - {"http://www.w3.org/2000/svg"}
    assert not urls, urls
    assert "default-src 'none'" in page
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)


def test_a_run_without_a_score_still_renders(tmp_path, store):
    import asyncio

    from kubevolve.core.spec import RunSpec
    from kubevolve.core.task import load_task
    from kubevolve.loop.research.offline import OfflineProposer
    from kubevolve.runtime.local import Evolution

    broken = write_task(
        tmp_path / "broken", evaluator="def evaluate(program_path, stage):\n    raise KeyError('f')\n"
    )
    spec = RunSpec(task=str(broken), name="broken", budget={"maxCandidates": 3})
    record = asyncio.run(Evolution(spec, load_task(broken), store, OfflineProposer(), tmp_path / "w").run())
    assert record.phase == "Failed"
    page = render_report(load_run(store, "broken"))
    assert "No candidate has a score yet." in page and "KeyError" in page
    assert "<td>failed_quick</td><td>raised</td><td>1</td>" in page  # the failures table, by kind


# ---- Chromium over the DevTools protocol ------------------------------------------------------------------
class DevTools:
    def __init__(self, ws_url: str):
        import websocket  # websocket-client, installed with the kubernetes client

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.ids:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (e.g. a blocked load) seen so far."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in (
                "error",
                "assert",
                "warning",
            ):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                out.append(f"log: {params['entry']}")
        return out

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]


@pytest.fixture
def chromium(tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.skip("headless Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    pytest.importorskip(
        "websocket", reason="websocket-client is needed to drive Chromium's DevTools protocol"
    )
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1280,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            assert proc.poll() is None, "chromium exited at start"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


PAGE_FACTS = """
(() => {
  const all = (sel) => Array.from(document.querySelectorAll(sel));
  const size = (el) => { const b = el.getBoundingClientRect(); return [Math.round(b.width), Math.round(b.height)]; };
  const visibleScatter = all('#scatters .scatter').find((d) => !d.hidden);
  return {
    ready: document.documentElement.getAttribute('data-ready'),
    plots: all('svg.plot').filter((s) => s.getBoundingClientRect().width > 0).map((s) => [s.getAttribute('class'), size(s)]),
    scoreDots: all('svg.score-plot circle.node').length,
    failTicks: all('svg.score-plot line.fail-tick').length,
    bestLine: document.querySelector('svg.score-plot path.best-line').getTotalLength(),
    treeDots: all('svg.tree-plot circle.node:not(.on-path)').length,
    pathDots: all('svg.tree-plot circle.on-path').length,
    bestPath: document.querySelector('svg.tree-plot path.best-path').getTotalLength(),
    scatterMetric: visibleScatter.getAttribute('data-metric'),
    scatterPanels: visibleScatter.querySelectorAll('svg > g').length,
    scatterDots: visibleScatter.querySelectorAll('circle.node').length,
    diffAdded: all('pre.diff .add').length,
    bestCodeLines: all('#best pre.numbered span').length,
    pathRows: all('#lineage tbody tr').length,
  };
})()
"""


def test_report_renders_in_headless_chromium(report_run, chromium, tmp_path):
    db, run_id = report_run
    store = SQLiteStore(db)
    try:
        data = load_run(store, run_id)
        page = tmp_path / "report.html"
        page.write_text(render_report(data))
        nodes = store.list_nodes(run_id)
        best = store.best_node(run_id)
    finally:
        store.close()
    evaluated = [n for n in nodes if n.stage is Stage.EVALUATED]
    assert len(evaluated) < len(nodes), "the run should have failures to plot"
    assert len({n.island for n in evaluated}) == 3

    tools = chromium
    for domain in ("Runtime", "Log", "Network", "Page"):
        tools.call(f"{domain}.enable")
    tools.call("Page.navigate", url=page.as_uri())
    tools.wait_for("Page.loadEventFired")

    facts = tools.evaluate(PAGE_FACTS)
    assert facts["ready"] == str(len(nodes)), "the page's script did not finish"
    kinds = {cls.split()[-1] for cls, (w, h) in facts["plots"] if w > 300 and h > 15}
    assert kinds >= {"score-plot", "tree-plot", "scatter-plot", "outcome-bar"}, facts["plots"]
    assert facts["scoreDots"] == len(evaluated)
    assert facts["failTicks"] == len(nodes) - len(evaluated)
    assert facts["treeDots"] == len(nodes)  # every candidate in the lineage tree
    assert facts["pathDots"] == len(data.best_path()) >= 2 and facts["bestPath"] > 0
    assert facts["pathRows"] == len(data.best_path())
    assert facts["bestLine"] > 0
    assert facts["scatterPanels"] == 3 and facts["scatterDots"] == len(evaluated)
    assert facts["diffAdded"] >= 1 and facts["bestCodeLines"] == len(best.code.splitlines())

    # the inline script works: a click on the best node shows its details; the scatter's x metric switches
    shown = tools.evaluate(
        "(() => { const dots = document.querySelectorAll('svg.tree-plot circle.on-path');"
        " dots[dots.length - 1].dispatchEvent(new MouseEvent('click', {bubbles: true}));"
        " const panel = document.getElementById('details');"
        " return [panel.hidden, document.getElementById('details-title').textContent]; })()"
    )
    assert shown == [False, f"#{best.seq} · {best.id}"]
    switched = tools.evaluate(
        "(() => { const s = document.getElementById('xmetric'); s.value = 'code length (bytes)';"
        " s.dispatchEvent(new Event('change'));"
        " return Array.from(document.querySelectorAll('#scatters .scatter')).filter((d) => !d.hidden)"
        ".map((d) => d.getAttribute('data-metric')); })()"
    )
    assert switched == ["code length (bytes)"]
    tools.evaluate(  # back to the page as it opens, for the screenshot
        "(() => { document.getElementById('details').hidden = true; const s = document.getElementById('xmetric');"
        " s.selectedIndex = 0; s.dispatchEvent(new Event('change')); })()"
    )

    assert tools.problems() == []
    assert all(url.startswith(("file:", "data:", "about:")) for url in tools.requests()), tools.requests()

    metrics = tools.call("Page.getLayoutMetrics")["cssContentSize"]
    shot = tools.call(
        "Page.captureScreenshot",
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1},
    )
    ARTIFACTS.mkdir(exist_ok=True)
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG") and len(png) > 50_000
    (ARTIFACTS / "report.png").write_bytes(png)
    shutil.copy(page, ARTIFACTS / "report.html")
