"""`kubevolve report` on a real run, loaded in headless Chromium over the DevTools protocol: the page must load
with no console error, no exception and no network request, and show its plots with one mark per candidate.
A full-page screenshot is saved to test-artifacts/report.png."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubevolve.cli.app import app
from kubevolve.core.models import Stage
from kubevolve.observe.report.page import load_run, render_report
from kubevolve.store.sqlite import SQLiteStore
from tests.kit.chromium import ARTIFACTS
from tests.kit.toy_task import write_task

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

    png = tools.screenshot("report.png")
    assert png.startswith(b"\x89PNG") and len(png) > 50_000
    shutil.copy(page, ARTIFACTS / "report.html")
