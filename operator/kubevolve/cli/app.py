"""The `kubevolve` command line. Without a run argument, commands act on the most recent run."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from kubevolve import api
from kubevolve.cli import render
from kubevolve.cli.cognition_cmd import cognition_app
from kubevolve.cli.common import (
    JsonOpt,
    RunArg,
    StoreOpt,
    TenantOpt,
    console,
    err_console,
    fail,
    get_store,
    resolve_run,
)
from kubevolve.cli.lab_cmd import lab_app
from kubevolve.cli.live import ProgressDisplay
from kubevolve.cli.operator_cmd import operator as operator_command
from kubevolve.cli.report_cmd import report
from kubevolve.cli.step import step_app
from kubevolve.cli.ui_cmd import ui
from kubevolve.core.models import CognitionEntry, Node, RunRecord
from kubevolve.core.spec import SpecError
from kubevolve.core.task import TaskError
from kubevolve.loop.agents import Agents
from kubevolve.loop.engineer.pool import EvaluatorUnavailable
from kubevolve.observe.report.data import run_settings
from kubevolve.observe.run_metrics import serve_run_metrics
from kubevolve.runtime.local import Evolution
from kubevolve.store.base import NotFound, Store, StoreError

# the order a user meets them: run one, watch it, look at what it found, share it, then the cluster's commands
COMMAND_ORDER = (
    "run",
    "status",
    "runs",
    "best",
    "show",
    "insights",
    "lineage",
    "export",
    "report",
    "cognition",
    "ui",
    "lab",
    "operator",
    "step",
)


class InOrderOfUse(TyperGroup):
    """`kubevolve --help` lists the commands in COMMAND_ORDER, not in the order they happen to be registered;
    a command missing from it comes last rather than not at all."""

    def list_commands(self, ctx: Any) -> list[str]:  # a context of typer's own copy of click
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))


app = typer.Typer(
    cls=InOrderOfUse,
    no_args_is_help=True,
    add_completion=False,
    help="Evolve programs with the ASI-Evolve loop.",
)
app.add_typer(step_app, name="step")
app.add_typer(cognition_app, name="cognition")
app.add_typer(lab_app, name="lab")
app.command()(report)
app.command()(ui)
app.command("operator")(operator_command)


def get_node(store: Store, node_id: str) -> Node:
    try:
        return store.get_node(node_id)
    except (NotFound, StoreError) as err:
        fail(str(err))


@app.command()
def run(
    target: Annotated[
        str, typer.Argument(help="A task folder or a run YAML file (bare spec or EvolutionRun).")
    ],
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    new: Annotated[
        bool, typer.Option("--new", help="Start a new run instead of resuming an unfinished one.")
    ] = False,
    max_candidates: Annotated[int | None, typer.Option(help="Override budget.maxCandidates.")] = None,
    evaluators: Annotated[int | None, typer.Option(help="Override parallelism.evaluators.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the run seed.")] = None,
    sandbox: Annotated[str | None, typer.Option(help="auto | bwrap | none")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (/metrics) during the run.")
    ] = None,
    metrics_addr: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
    as_json: JsonOpt = False,
) -> None:
    """Run (or resume) an evolution locally, with a live progress display."""
    try:
        prepared = api.prepare_run(
            target,
            store=store_url,
            tenant=tenant,
            new=new,
            max_candidates=max_candidates,
            evaluators=evaluators,
            seed=seed,
            sandbox=sandbox,
        )
    except (SpecError, TaskError, StoreError, ValueError) as err:
        fail(str(err))
    if prepared.resumed:
        err_console.print(f"resuming run {prepared.spec.name}")
    warning = prepared.sandbox_warning()
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}")
    with ProgressDisplay(err_console if as_json else console, prepared.spec.budget.max_candidates) as display:
        evolution = prepared.evolution(observers=[display])
        if metrics_port is not None:  # the metrics recorder observes the run after the display
            try:
                serve_run_metrics(evolution, metrics_port, metrics_addr)
            except OSError as err:
                fail(f"cannot serve metrics on {metrics_addr}:{metrics_port}: {err}")
        try:
            record = asyncio.run(_run_until_signal(evolution, prepared.agents))
        except EvaluatorUnavailable as err:  # the task's evaluate.py, not kubevolve: its file and line
            fail(str(err), code=1)
    store = prepared.store
    result = api.run_result(store, record)
    best = result.best
    if as_json:
        render.print_json(render.run_summary(result))
    elif best is not None and best.score is not None:
        console.print(f"\n[bold]best program[/] (node {best.id}, score {best.score:.6g}):")
        render.print_node(console, best, diff=False)
        initial = store.list_nodes(record.id, limit=1)[0]
        if initial.score is not None and best.score is not None:
            console.print(
                f"\n[bold]{record.id}[/]: initial score {initial.score:.6g} → best {best.score:.6g} "
                f"({best.score - initial.score:+.6g}) in {result.candidates} candidates"
            )
    if record.phase == "Failed":
        raise typer.Exit(1)


async def _run_until_signal(evolution: Evolution, agents: Agents) -> RunRecord:
    """SIGTERM (as from Kubernetes or `kill`) stops the run cleanly, like Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None, "called from asyncio.run"
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await evolution.run()
    except asyncio.CancelledError:
        err_console.print(f"stopped; run `kubevolve run` again to resume {evolution.run_id}")
        sys.exit(130)
    finally:
        await agents.close()


@app.command()
def runs(store_url: StoreOpt = None, tenant: TenantOpt = "default", as_json: JsonOpt = False) -> None:
    """List the runs in the store, newest first."""
    store = get_store(store_url, tenant)
    rows = [render.run_summary(r) for r in api.list_runs(store=store)]
    if as_json:
        render.print_json(rows)
    else:
        render.print_runs(console, rows)


@app.command()
def status(
    run_id: RunArg = None, store_url: StoreOpt = None, tenant: TenantOpt = "default", as_json: JsonOpt = False
) -> None:
    """Where a run stands: phase (a dead local run as such), sampler, outcomes, failures, best score."""
    store = get_store(store_url, tenant)
    try:
        result = api.run_status(run_id, store=store)
    except NotFound as err:
        fail(str(err))
    summary = render.run_summary(result)
    summary["sampler"] = run_settings(result.run).sampler_kind
    summary["failures"] = render.failure_summary(store.iter_nodes(result.id))
    if as_json:
        render.print_json(summary)
    else:
        render.print_run(console, summary)


@app.command()
def best(
    run_id: RunArg = None, store_url: StoreOpt = None, tenant: TenantOpt = "default", as_json: JsonOpt = False
) -> None:
    """The best node of a run, with its program."""
    store = get_store(store_url, tenant)
    rid = resolve_run(store, run_id)
    node = api.best_node(rid, store=store)
    if node is None:
        fail(f"run {rid} has no evaluated node yet", code=1)
    if as_json:
        render.print_json(node.to_dict())
    else:
        render.print_node(console, node, diff=False)


@app.command()
def show(
    node_id: Annotated[str, typer.Argument(help="Node id or a unique prefix of it.")],
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    prompts: Annotated[
        bool, typer.Option("--prompts", help="Also print every prompt and completion.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """One node: code, diff, metrics, error, log tail, its analysis, the LLM judge's verdict and what retrieval
    put into its prompt (with --prompts, its LLM transcript)."""
    store = get_store(store_url, tenant)
    node = get_node(store, node_id)
    insights = store.list_insights(node.run_id)
    insight = render.insight_of(node, insights)
    retrieved = render.retrieved_items(node, insights, _cognition_of(store, node))
    if as_json:
        data = node.to_dict()
        if not prompts:
            data.pop("transcript")
        data["insight"] = None if insight is None else render.insight_summary(insight)
        data["retrieved_items"] = retrieved
        render.print_json(data)
        return
    render.print_node(console, node, insight=insight, retrieved=retrieved)
    if prompts:
        render.print_transcript(console, node)


def _cognition_of(store: Store, node: Node) -> list[CognitionEntry]:
    """The cognition base the node's run retrieved from (its task's collection); [] when none was used."""
    if not node.retrieved.get("cognition"):
        return []
    try:
        return store.list_cognition(store.get_run(node.run_id).task)
    except NotFound:
        return []


@app.command()
def insights(
    run_id: RunArg = None, store_url: StoreOpt = None, tenant: TenantOpt = "default", as_json: JsonOpt = False
) -> None:
    """The Analyzer's insights of a run, newest first, each with the nodes it is about."""
    store = get_store(store_url, tenant)
    rid = resolve_run(store, run_id)
    found = sorted(store.list_insights(rid), key=lambda i: i.created_at, reverse=True)
    if as_json:
        render.print_json([render.insight_summary(i) for i in found])
    elif not found:
        err_console.print(f"run {rid} has no insights yet (the Analyzer writes one per analysed candidate)")
    else:
        render.print_insights(console, found)


@app.command()
def lineage(
    node_id: Annotated[
        str | None, typer.Argument(help="Node id (default: the best node of the latest run).")
    ] = None,
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """The chain of first parents from the initial program to a node."""
    store = get_store(store_url, tenant)
    if node_id is None:
        node = store.best_node(resolve_run(store, None))
        if node is None:
            fail("the latest run has no evaluated node yet", code=1)
    else:
        node = get_node(store, node_id)
    chain = [node]
    while chain[-1].parent_ids and len(chain) < 10_000:
        chain.append(store.get_node(chain[-1].parent_ids[0]))
    chain.reverse()
    if as_json:
        render.print_json([render.node_summary(n) for n in chain])
    else:
        render.print_lineage(console, chain)


@app.command()
def export(
    run_id: RunArg = None,
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Every node of a run as JSON Lines, in the order they were committed."""
    store = get_store(store_url, tenant)
    rid = resolve_run(store, run_id)
    stream = out.open("w") if out else sys.stdout
    count = 0
    try:
        for node in store.iter_nodes(rid):
            stream.write(json.dumps(node.to_dict(), default=str) + "\n")
            count += 1
    finally:
        if out:
            stream.close()
            err_console.print(f"wrote {count} nodes of {rid} to {out}")


def main() -> None:
    app()
