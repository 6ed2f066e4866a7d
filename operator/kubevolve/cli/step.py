"""`kubevolve step propose|evaluate|analyze`: one engine step, as run inside a Kubernetes pod.

Each prints the node (or insight) it produced as JSON on stdout. A candidate that fails is a result, not an
error: the exit status is non-zero only when the step itself could not run (bad store, unknown run or node).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from kubevolve.cli import render
from kubevolve.cli.common import StoreOpt, TenantOpt, fail, get_store
from kubevolve.core.spec import SpecError
from kubevolve.core.task import TaskError
from kubevolve.loop.agents import kubevolve_home, make_agents
from kubevolve.loop.steps import StepError, analyze_step, evaluate_step, load_context, propose_step
from kubevolve.store.base import NotFound, StoreError

step_app = typer.Typer(
    no_args_is_help=True, help="Run one engine step (used by the Kubernetes operator's Jobs)."
)

RunOpt = Annotated[str, typer.Option("--run", help="Run id.")]


def _context(store_url: str | None, tenant: str, run_id: str):
    store = get_store(store_url, tenant)
    try:
        return load_context(store, run_id)
    except (StepError, SpecError, TaskError) as err:
        fail(str(err))


def _run(coro):
    try:
        return asyncio.run(coro)
    except (NotFound, StepError, StoreError) as err:
        fail(str(err))


async def _with_agents(ctx, step):
    agents = make_agents(ctx.spec)
    try:
        return await step(agents)
    finally:
        await agents.close()


@step_app.command()
def propose(
    run_id: RunOpt,
    node_id: Annotated[
        str | None, typer.Option("--node-id", help="Id for the new node (idempotent).")
    ] = None,
    retry_of: Annotated[str | None, typer.Option("--retry-of", help="Debug-retry this failed node.")] = None,
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
) -> None:
    """Store one new candidate of the run (the initial program first)."""
    ctx = _context(store_url, tenant, run_id)
    node = _run(
        _with_agents(ctx, lambda agents: propose_step(ctx, agents, node_id=node_id, retry_of=retry_of))
    )
    render.print_json(render.node_summary(node))


@step_app.command()
def evaluate(
    run_id: RunOpt,
    node_id: Annotated[str, typer.Option("--node", help="The PROPOSED node to evaluate.")],
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    workspace: Annotated[
        Path | None, typer.Option(help="Scratch folder (default: $KUBEVOLVE_HOME/work).")
    ] = None,
) -> None:
    """Evaluate a proposed node through the task's stages and store the result."""
    ctx = _context(store_url, tenant, run_id)
    node = _run(evaluate_step(ctx, node_id, workspace or kubevolve_home() / "work"))
    render.print_json(render.node_summary(node))


@step_app.command()
def analyze(
    run_id: RunOpt,
    node_id: Annotated[str, typer.Option("--node", help="The finished node to analyse.")],
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
) -> None:
    """Write the insight of a finished node."""
    ctx = _context(store_url, tenant, run_id)
    insight = _run(_with_agents(ctx, lambda agents: analyze_step(ctx, node_id, agents)))
    render.print_json(None if insight is None else {"id": insight.id, "text": insight.text})
