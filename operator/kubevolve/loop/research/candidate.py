"""Making one candidate: from a sampler's selection to a proposed node. Shared by the local runtime and the
`kubevolve step propose` worker, so both record candidates the same way."""

from __future__ import annotations

import difflib
import random
import time

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node, Stage
from kubevolve.core.task import Task
from kubevolve.loop.learn.retrieval import RetrievedContext
from kubevolve.loop.research.proposal import ProposalError, ProposalRequest, Proposer
from kubevolve.loop.sample.base import Selection


def unified_diff(parent: str, child: str) -> str:
    lines = difflib.unified_diff(parent.splitlines(True), child.splitlines(True), "parent", "candidate", n=2)
    return "".join(lines)


def proposal_seed(run_seed: int, index: int) -> int:
    """A per-proposal seed: the same run seed and proposal index always give the same proposal."""
    return random.Random(f"{run_seed}:{index}").getrandbits(63)


FAILED_ANSWER_CHARS = 6000  # of an answer that did not apply, handed back on a debug retry (its end)


def failed_answer(failed: Node) -> str:
    """The LLM's answer that could not be applied (an edit-format error), as its transcript kept it."""
    if failed.failure is not FailureKind.MALFORMED_ANSWER:
        return ""
    answers = [t for t in failed.transcript if t.get("purpose") in ("researcher", "debug retry")]
    return str(answers[-1].get("completion", "")) if answers else ""


def debug_feedback(failed: Node) -> str:
    """What a debug retry tells the proposer about the attempt that failed: its error, and the change it made
    (its diff), or, when its answer could not be applied (a SEARCH that did not match), that answer."""
    parts = [f"Your previous attempt failed: {failed.error}"]
    answer = failed_answer(failed)
    if answer.strip():
        parts.append(f"Your answer was:\n````\n{answer[-FAILED_ANSWER_CHARS:].strip()}\n````")
    if failed.diff:
        parts.append(f"Its change was:\n```diff\n{failed.diff[-3000:]}```")
    if failed.log_tail.strip():
        parts.append(f"The end of its output:\n```\n{failed.log_tail[-1500:]}\n```")
    parts.append("Fix the problem and answer again in the same format.")
    return "\n\n".join(parts)


def seed_node(run_id: str, task: Task, node_id: str | None = None) -> Node:
    """The run's first node: the task's initial program, evaluated like any candidate."""
    node = Node(
        run_id=run_id, code=task.initial_code, motivation="the task's initial program", proposer="initial"
    )
    if node_id:
        node.id = node_id
    return node


async def propose_candidate(
    task: Task,
    run_id: str,
    selection: Selection,
    island: int,
    proposer: Proposer,
    seed: int,
    *,
    node_id: str | None = None,
    context: RetrievedContext | None = None,
    retry_of: Node | None = None,
) -> Node:
    """Ask the proposer for a child of `selection`. The node comes back PROPOSED, or REJECTED_STATIC with the
    proposer's reason when it could not produce a program (e.g. malformed LLM output)."""
    parent = selection.parents[0]
    node = Node(
        run_id=run_id,
        code=parent.code,
        parent_ids=[p.id for p in selection.parents],
        inspiration_ids=[n.id for n in selection.inspirations],
        island=island,
        generation=parent.generation + 1,
        proposer=proposer.name,
    )
    if node_id:
        node.id = node_id
    request = ProposalRequest(
        task=task, parents=selection.parents, inspirations=selection.inspirations, seed=seed
    )
    if context is not None:
        request.cognition, request.insights = context.cognition, context.insights
        request.analyses = context.analyses
        node.retrieved = {
            "insights": [i.id for i in request.insights],
            "cognition": [e.id for e in request.cognition],
        }
    if retry_of is not None:
        node.retry_of, node.attempt = retry_of.id, retry_of.attempt + 1
        request.feedback = debug_feedback(retry_of)
    started = time.monotonic()
    try:
        proposal = await proposer.propose(request)
    except ProposalError as err:
        node.fail(Stage.REJECTED_STATIC, err.kind, f"proposal failed: {err}")
        node.llm, node.transcript = dict(err.llm), list(err.transcript)
        return node
    finally:
        node.timings["propose"] = time.monotonic() - started
    node.code, node.motivation, node.proposer = proposal.code, proposal.motivation, proposal.proposer
    node.llm, node.transcript = dict(proposal.llm), list(proposal.transcript)
    node.diff = unified_diff(parent.code, node.code)
    return node
