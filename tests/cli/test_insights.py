"""The Analyzer's insights from the command line (`show`, `insights`), and the sampler a run uses."""

from __future__ import annotations

import json
import time

from rich.console import Console
from typer.testing import CliRunner

from kubevolve.cli import render
from kubevolve.cli.app import app
from kubevolve.core.models import Insight, RunRecord
from kubevolve.observe.report.data import load_run, run_settings
from kubevolve.observe.report.page import render_report
from kubevolve.store.sqlite import SQLiteStore

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_show_includes_the_nodes_insight_and_insights_lists_them_newest_first(toy_task, kubevolve_home):
    run = json.loads(invoke("run", str(toy_task), "--max-candidates", "6", "--json").stdout)
    listed = json.loads(invoke("insights", "--json").stdout)
    assert len(listed) >= 5 and all(i["run_id"] == run["id"] for i in listed)
    assert [i["created_at"] for i in listed] == sorted((i["created_at"] for i in listed), reverse=True)
    assert listed == json.loads(invoke("insights", run["id"], "--json").stdout)

    about = listed[0]["node_ids"][0]
    shown = json.loads(invoke("show", about, "--json").stdout)
    assert shown["insight"]["id"] == listed[0]["id"] and shown["insight"]["text"] == listed[0]["text"]
    text = invoke("show", about).stdout
    assert f"insight {listed[0]['id']}: {listed[0]['text']}" in text  # one unbroken line into a pipe

    # a long insight is printed whole, in a pipe and on a narrow terminal
    store = SQLiteStore(kubevolve_home / "kubevolve.db")
    long_text = "The radius update " + " ".join(f"w{i}" for i in range(200)) + " ends here."
    store.add_insight(
        Insight(run_id=run["id"], text=long_text, node_ids=[about], created_at=time.time() + 60)
    )
    newest = store.list_insights(run["id"])
    store.close()
    piped = invoke("insights").stdout
    assert long_text in piped and piped.index(long_text) < piped.index(listed[0]["text"])
    console = Console(record=True, width=50, force_terminal=True)
    render.print_insights(console, sorted(newest, key=lambda i: -i.created_at))
    words = console.export_text().split()
    assert [w for w in words if w.startswith("w") and w[1:].isdigit()] == [f"w{i}" for i in range(200)]


def test_insights_of_a_run_without_any_says_so(tmp_path):
    db = tmp_path / "s.db"
    store = SQLiteStore(db)
    store.put_run(RunRecord(id="quiet", task="t", spec={}))
    store.close()
    result = invoke("insights", "quiet", "--store", str(db))
    assert result.exit_code == 0 and "run quiet has no insights yet" in result.stderr
    assert json.loads(invoke("insights", "quiet", "--store", str(db), "--json").stdout) == []
    assert invoke("insights", "nope", "--store", str(db)).exit_code == 2


def test_status_and_the_report_name_the_sampler(toy_task, tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(f"task: {toy_task}\nsampler: {{kind: map_elites, islands: 2}}\n")
    chosen = json.loads(invoke("run", str(run_file), "--max-candidates", "4", "--json").stdout)
    default = json.loads(invoke("run", str(toy_task), "--max-candidates", "4", "--new", "--json").stdout)

    assert json.loads(invoke("status", chosen["id"], "--json").stdout)["sampler"] == "map_elites"
    assert "sampler: greedy" in invoke("status", default["id"]).stdout  # the toy task's own sampler

    store = SQLiteStore(tmp_path / "kvhome" / "kubevolve.db")
    for run_id, kind in ((chosen["id"], "map_elites"), (default["id"], "greedy")):
        page = render_report(load_run(store, run_id))
        assert f'<div class="k">sampler</div><div class="v">{kind}</div>' in page
    store.close()


def test_the_sampler_of_a_run_whose_task_folder_is_elsewhere():
    def kind(spec: dict, facts: dict | None = None) -> str | None:
        return run_settings(RunRecord(id="r", task="t", spec=spec, task_facts=facts or {})).sampler_kind

    elsewhere = {"task": "/nonexistent/task"}
    assert kind({**elsewhere, "sampler": {"kind": "random"}}) == "random"
    assert kind({**elsewhere, "sampler": {"islands": 2}}) == "ucb1"  # the spec's sampler, its default kind
    facts = {"name": "t", "metric": "f", "sampler": "map_elites"}  # a step reported it from the run's image
    assert kind(elsewhere, facts) == "map_elites"
    assert kind(elsewhere) is None and kind({}) is None
