"""The command line: run, then inspect the run without naming it; bad input gets a clear error."""

from __future__ import annotations

import itertools
import json

import pytest
from typer.testing import CliRunner

from kubevolve.cli.app import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def finished_run(toy_task):
    result = invoke("run", str(toy_task), "--max-candidates", "12", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_run_then_inspect_the_latest_run(finished_run, tmp_path):
    assert finished_run["phase"] == "Succeeded" and finished_run["candidates"] == 12

    best = json.loads(invoke("best", "--json").stdout)
    assert best["id"] == finished_run["best_node"]
    assert best["score"] == finished_run["best_score"]
    assert "def solve" in best["code"]

    status = json.loads(invoke("status", "--json").stdout)
    assert status["id"] == finished_run["id"] and sum(status["by_stage"].values()) == 12

    chain = json.loads(invoke("lineage", "--json").stdout)
    assert chain[0]["parent_ids"] == [] and chain[-1]["id"] == best["id"]
    assert all(child["parent_ids"][0] == parent["id"] for parent, child in itertools.pairwise(chain))

    shown = invoke("show", best["id"][:8])
    assert shown.exit_code == 0 and best["id"] in shown.stdout and "def solve" in shown.stdout

    out = tmp_path / "nodes.jsonl"
    assert invoke("export", "--out", str(out)).exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [n["seq"] for n in lines] == list(range(12))

    listing = json.loads(invoke("runs", "--json").stdout)
    assert [r["id"] for r in listing] == [finished_run["id"]]


def test_each_command_reads_the_tenant_it_is_given(toy_task, monkeypatch):
    """On a cluster a lab's runs live under its namespace's tenant; a lab member reads them with --tenant."""
    lab_run = json.loads(
        invoke("run", str(toy_task), "--max-candidates", "4", "--tenant", "lab-a", "--json").stdout
    )
    assert json.loads(invoke("runs", "--json").stdout) == []  # not in the default tenant
    assert [r["id"] for r in json.loads(invoke("runs", "--tenant", "lab-a", "--json").stdout)] == [
        lab_run["id"]
    ]
    monkeypatch.setenv("KUBEVOLVE_TENANT", "lab-a")
    for command in (["status", lab_run["id"]], ["best", lab_run["id"]], ["lineage"]):
        result = invoke(*command, "--json")
        assert result.exit_code == 0 and lab_run["best_node"] in result.stdout, (command, result.output)
    result = invoke("status", lab_run["id"], "--tenant", "lab-b")
    assert result.exit_code != 0 and lab_run["id"] in result.output


def test_running_a_finished_task_again_starts_a_new_run(finished_run, toy_task):
    again = invoke("run", str(toy_task), "--max-candidates", "12", "--json")
    summary = json.loads(again.stdout)
    # only unfinished runs are resumed; the store keeps both runs
    assert summary["id"] != finished_run["id"]
    assert len(json.loads(invoke("runs", "--json").stdout)) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "/nonexistent/task"), "no such task folder or run file"),
        (("status",), "no runs yet"),
        (("show", "abcdef12"), "abcdef12"),
        (("best", "no-such-run"), "no run 'no-such-run'"),
    ],
)
def test_bad_input_gets_a_clear_error(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_bad_run_file_names_the_field(tmp_path, toy_task):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(f"task: {toy_task}\nbudget: {{maxCandidate: 3}}\n")
    result = invoke("run", str(run_file))
    assert result.exit_code == 2
    assert "spec.budget.maxCandidate: unknown field" in result.stderr


def test_status_and_the_live_panel_show_failures_by_kind_in_words(tmp_path):
    from rich.console import Console

    from kubevolve.cli.live import render
    from kubevolve.core.kinds import FailureKind
    from kubevolve.core.models import Node, RunRecord, Stage
    from kubevolve.observe.progress import RunProgress
    from kubevolve.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    store.put_run(RunRecord(id="r", task="toy", spec={}))
    progress = RunProgress("r")
    for i, (stage, kind) in enumerate(
        [
            (Stage.EVALUATED, None),
            (Stage.REJECTED_STATIC, FailureKind.FORBIDDEN_IMPORT),
            (Stage.REJECTED_STATIC, FailureKind.FORBIDDEN_IMPORT),
            (Stage.FAILED_QUICK, FailureKind.TIMEOUT),
        ]
    ):
        node = Node(run_id="r", code=f"x = {i}", stage=stage, score=1.0 if kind is None else None)
        if kind is not None:
            node.fail(stage, kind, "the message for people")
        progress.record(store.add_node(node))
    store.close()

    status = json.loads(invoke("status", "r", "--store", str(tmp_path / "s.db"), "--json").stdout)
    assert status["failures"] == {"forbidden_import": 2, "timeout": 1}
    text = invoke("status", "r", "--store", str(tmp_path / "s.db")).stdout
    assert "forbidden import" in text and "timeout" in text and "forbidden_import" not in text

    console = Console(record=True, width=100)
    console.print(render(progress, []))
    panel = console.export_text()
    assert "rejected_static: forbidden import" in panel and "failed_quick: timeout" in panel
