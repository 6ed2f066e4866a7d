"""The engine steps that Kubernetes Jobs run: each reads the store, writes the store, and is idempotent."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from kubevolve.cli.app import app
from kubevolve.core.models import RunRecord, Stage
from kubevolve.core.spec import RunSpec
from kubevolve.loop.agents import make_agents
from kubevolve.loop.engineer.engineer import OneSlotEngineer
from kubevolve.loop.steps import analyze_step, evaluate_step, load_context, propose_step

AGENTS = make_agents(RunSpec(task="unused"))


def put_run(store, toy_task, name="k8s-run"):
    spec = RunSpec(task=str(toy_task), name=name)
    store.put_run(RunRecord(id=name, task="toy", spec=spec.to_dict()))
    return load_context(store, name)


def test_propose_evaluate_analyze_cycle(store, toy_task, tmp_path):
    ctx = put_run(store, toy_task)
    seed = asyncio.run(propose_step(ctx, AGENTS, node_id="seed-0"))
    assert seed.id == "seed-0" and seed.stage is Stage.PROPOSED and not seed.parent_ids
    assert asyncio.run(propose_step(ctx, AGENTS, node_id="seed-0")).seq == seed.seq  # idempotent

    engineer = OneSlotEngineer(ctx.task, ctx.spec, tmp_path / "work")
    evaluated = asyncio.run(evaluate_step(ctx, "seed-0", engineer))
    assert evaluated.stage is Stage.EVALUATED and evaluated.score == -8.5
    assert store.get_node("seed-0").stage is Stage.EVALUATED
    again = asyncio.run(evaluate_step(ctx, "seed-0", engineer))
    assert again.timings == evaluated.timings  # a final node is not evaluated twice

    insight = asyncio.run(analyze_step(ctx, "seed-0", AGENTS))
    assert "Candidate #0" in insight.text and "f -8.5" in insight.text
    assert store.get_node("seed-0").insight_id == insight.id
    assert asyncio.run(analyze_step(ctx, "seed-0", AGENTS)).id == insight.id

    child = asyncio.run(propose_step(ctx, AGENTS, node_id="cand-1"))
    assert child.parent_ids == ["seed-0"] and child.stage is Stage.PROPOSED and child.diff
    child = asyncio.run(evaluate_step(ctx, "cand-1", engineer))
    assert child.stage is Stage.EVALUATED
    text = asyncio.run(analyze_step(ctx, "cand-1", AGENTS)).text
    assert "f -8.5 -> " in text and "offline proposer" in text


def test_step_cli_prints_json_and_names_unknown_runs(store, toy_task, tmp_path):
    put_run(store, toy_task)
    runner = CliRunner()
    args = ["--run", "k8s-run", "--store", str(store.path)]
    out = runner.invoke(app, ["step", "propose", *args, "--node-id", "n0"], catch_exceptions=False)
    assert out.exit_code == 0 and json.loads(out.stdout)["stage"] == "proposed"
    out = runner.invoke(app, ["step", "evaluate", *args, "--node", "n0", "--workspace", str(tmp_path / "w")])
    assert out.exit_code == 0 and json.loads(out.stdout)["stage"] == "evaluated"
    out = runner.invoke(app, ["step", "analyze", *args, "--node", "n0"])
    assert out.exit_code == 0 and "Candidate #0" in json.loads(out.stdout)["text"]
    bad = runner.invoke(app, ["step", "propose", "--run", "nope", "--store", str(store.path)])
    assert bad.exit_code == 2 and "run 'nope' is not in the store" in bad.stderr
    other_tenant = runner.invoke(app, ["step", "propose", *args, "--tenant", "lab-b"])
    assert other_tenant.exit_code == 2 and "tenant 'lab-b'" in other_tenant.stderr
