"""`kubevolve step propose|evaluate|analyze`: one engine step, as run inside a Kubernetes pod.

Each prints the node (or insight) it produced as JSON on stdout. A candidate that fails is a result, not an
error: the exit status is non-zero only when the step itself could not run (bad store, unknown run or node).
`parse_step_command` reads a Job's command line with this same parser (the test kit's fake pods use it).

`step evaluate --input FILE` is how an evaluation pod evaluates: the candidate comes from the file (the
operator's ConfigMap) instead of the store, nothing is stored, and the result is published for the operator
(loop/evaluation_io.py): as the last line of stdout and, with `--termination-log`, as the container's
termination message. With `--candidate-socket` the candidate's side is the pod's other container, whose
zygote connects there (the pod layout, docs/kubernetes.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from kubevolve.cli import render
from kubevolve.cli.common import StoreOpt, TenantOpt, fail, get_store
from kubevolve.core.kinds import Role
from kubevolve.core.spec import SpecError, parse_run_spec
from kubevolve.core.task import TaskError, load_task
from kubevolve.loop.agents import Agents, make_agents
from kubevolve.loop.engineer.engineer import OneSlotEngineer
from kubevolve.loop.engineer.pool import EvaluatorUnavailable
from kubevolve.loop.engineer.zygote import JUDGE_GONE
from kubevolve.loop.evaluation_io import EvaluationInput, EvaluationResult, HandoverError
from kubevolve.loop.steps import (
    StepContext,
    StepError,
    analyze_step,
    evaluate,
    evaluate_step,
    load_context,
    propose_step,
)
from kubevolve.runtime.targets import kubevolve_home
from kubevolve.store.base import NotFound, StoreError

T = TypeVar("T")

step_app = typer.Typer(
    no_args_is_help=True, help="Run one engine step (used by the Kubernetes operator's Jobs)."
)

RunOpt = Annotated[str, typer.Option("--run", help="Run id.")]


def _context(store_url: str | None, tenant: str, run_id: str) -> StepContext:
    store = get_store(store_url, tenant)
    try:
        return load_context(store, run_id)
    except (StepError, SpecError, TaskError) as err:
        fail(str(err))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (NotFound, StepError, StoreError) as err:
        fail(str(err))


async def _with_agents(ctx: StepContext, step: Callable[[Agents], Awaitable[T]]) -> T:
    agents = make_agents(ctx.spec)
    try:
        return await step(agents)
    finally:
        await agents.close()


@step_app.command(Role.PROPOSE)
def propose(
    run_id: RunOpt,
    node_id: Annotated[
        str | None, typer.Option("--node-id", help="Id for the new node (idempotent).")
    ] = None,
    retry_of: Annotated[str | None, typer.Option("--retry-of", help="Debug-retry this failed node.")] = None,
    index: Annotated[
        int | None,
        typer.Option("--index", min=0, help="The proposal's index in the run (its parents' draw and seed)."),
    ] = None,
    queued_at: Annotated[
        float | None,
        typer.Option("--queued-at", help="When the operator created the Job (epoch seconds), for its pacer."),
    ] = None,
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
) -> None:
    """Store one new candidate of the run (the initial program first)."""
    ctx = _context(store_url, tenant, run_id)
    node = _run(
        _with_agents(
            ctx,
            lambda agents: propose_step(
                ctx, agents, node_id=node_id, retry_of=retry_of, index=index, queued_at=queued_at
            ),
        )
    )
    render.print_json(render.node_summary(node))


@step_app.command(Role.EVALUATE)
def evaluate_command(
    run_id: RunOpt,
    node_id: Annotated[str, typer.Option("--node", help="The PROPOSED node to evaluate.")],
    store_url: StoreOpt = None,
    tenant: TenantOpt = "default",
    workspace: Annotated[
        Path | None, typer.Option(help="Scratch folder (default: $KUBEVOLVE_HOME/work).")
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option("--input", help="Evaluate the candidate in this file (an evaluation pod's): no store."),
    ] = None,
    candidate_socket: Annotated[
        Path | None,
        typer.Option(
            help="With --input: the candidate's zygote runs in another container and connects here."
        ),
    ] = None,
    termination_log: Annotated[
        Path | None, typer.Option(help="With --input: also write the result's digest here.")
    ] = None,
) -> None:
    """Evaluate a proposed node through the task's stages and store the result."""
    home = workspace or kubevolve_home() / "work"
    if input_file is None:
        if candidate_socket is not None or termination_log is not None:
            fail("--candidate-socket and --termination-log go with --input (an evaluation pod's)")
        ctx = _context(store_url, tenant, run_id)
        engineer = OneSlotEngineer(ctx.task, ctx.spec, home)
        node = _run(evaluate_step(ctx, node_id, engineer))
        render.print_json(render.node_summary(node))
        return
    try:
        result = _evaluate_handed_over(run_id, node_id, input_file, home, candidate_socket)
    finally:
        if candidate_socket is not None:  # a zygote still waiting for us must not wait for nothing
            with contextlib.suppress(OSError):
                candidate_socket.parent.mkdir(parents=True, exist_ok=True)
                Path(str(candidate_socket) + JUDGE_GONE).touch()
    if termination_log is not None:
        termination_log.write_text(result.termination_message())
    print(result.log_line(), flush=True)


def _evaluate_handed_over(
    run_id: str, node_id: str, input_file: Path, workspace: Path, candidate_socket: Path | None
) -> EvaluationResult:
    try:
        given = EvaluationInput.from_json(input_file.read_text())
        if (given.run_id, given.node_id) != (run_id, node_id):
            raise HandoverError(f"{input_file} is for node {given.node_id} of run {given.run_id}")
        spec = parse_run_spec(given.spec)
        task = load_task(Path(spec.task))
    except (OSError, HandoverError, SpecError, TaskError) as err:
        fail(f"cannot evaluate {node_id}: {err}")
    engineer = OneSlotEngineer(task, spec, workspace, zygote_socket=candidate_socket)
    try:
        node = asyncio.run(evaluate(engineer, given.node()))
    except EvaluatorUnavailable as err:
        fail(f"the task cannot evaluate: {err}")
    return EvaluationResult.of(node)


@step_app.command(Role.ANALYZE)
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


# ---- reading a Job's command line ------------------------------------------------------------------------
@dataclass(frozen=True)
class StepCommand:
    """`kubevolve step ROLE ...` as the step sees it: its role and options (by their parameter names)."""

    role: Role
    run_id: str
    node_id: str | None
    store_url: str | None
    tenant: str
    retry_of: str | None = None
    index: int | None = None
    queued_at: float | None = None
    workspace: Path | None = None
    input_file: Path | None = None
    candidate_socket: Path | None = None
    termination_log: Path | None = None


@functools.cache
def _step_group() -> TyperGroup:
    group = typer.main.get_command(step_app)
    assert isinstance(group, TyperGroup)
    return group


def parse_step_command(argv: Sequence[str]) -> StepCommand:
    """A Job's `kubevolve step ROLE --run R ...` command line, read by the parser of `kubevolve step` itself
    (options' environment variables included). A command that parser refuses raises ValueError."""
    if list(argv[:2]) != ["kubevolve", "step"] or len(argv) < 3:
        raise ValueError(f"not a `kubevolve step` command: {list(argv)}")
    try:
        role = Role(argv[2])
    except ValueError:
        raise ValueError(f"unknown step {argv[2]!r} in {list(argv)}") from None
    group = _step_group()
    try:
        with group.make_context("kubevolve step", list(argv[2:])) as parent:
            command = group.get_command(parent, role)
            assert command is not None
            with command.make_context(role, list(argv[3:]), parent=parent) as ctx:
                params: dict[str, Any] = dict(ctx.params)
    except typer.TyperException as err:
        raise ValueError(f"bad `kubevolve step` command {list(argv)}: {err}") from None
    return StepCommand(role=role, **params)
