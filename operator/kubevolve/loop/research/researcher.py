"""The LLM Researcher: builds a prompt from the task, the parent, inspirations, their analyses, retrieved
cognition and insights (and, on a debug retry, the failed attempt), asks the model, and applies its answer."""

from __future__ import annotations

from kubevolve.core.kinds import FailureKind
from kubevolve.core.models import Node
from kubevolve.core.spec import LLMSpec
from kubevolve.loop.llm.client import LLMClient, LLMError
from kubevolve.loop.llm.ensemble import CostAwareBandit
from kubevolve.loop.llm.prompts import render
from kubevolve.loop.offload import off_loop
from kubevolve.loop.research.edit_format import Answer, EditError, apply_answer, parse_answer
from kubevolve.loop.research.proposal import Proposal, ProposalError, ProposalRequest

EDIT_INSTRUCTIONS = {
    "diff": "Answer with SEARCH/REPLACE edits.",
    "rewrite": "Answer with the whole new program in one ```python code block.",
    "auto": "Prefer small SEARCH/REPLACE edits; rewrite the whole program only for a real redesign.",
}


def _metrics(node: Node) -> str:
    return ", ".join(f"{k}={v:.6g}" for k, v in node.metrics.items()) or "none"


def _blocks(node: Node, request: ProposalRequest) -> str:
    return "\n# ...\n".join(request.task.split(node.code).blocks)


def _score(node: Node) -> str:
    return f"{node.score:.6g}" if node.score is not None else "unknown"


def _motivation(node: Node) -> str:
    """What the program's author meant it to do (an inspiration's idea, not only its code)."""
    return f"Motivation: {node.motivation.strip()}\n" if node.motivation.strip() else ""


def _analysis(node: Node, request: ProposalRequest) -> str:
    """The Analyzer's reading of the program's experiment, a line per part."""
    text = request.analyses.get(node.id, "").strip()
    return f"Analysis:\n{text}\n" if text else ""


def _section(title: str, items: list[str]) -> str:
    return f"# {title}\n" + "\n".join(items) + "\n" if items else ""


def researcher_messages(request: ProposalRequest, edit_format: str) -> list[dict[str, str]]:
    task, parent = request.task, request.parents[0]
    inspirations = [
        f"## Program {chr(65 + i)} (score {_score(n)}; {_metrics(n)})\n"
        + _motivation(n)
        + _analysis(n, request)
        + f"```python\n{_blocks(n, request)}```"
        for i, n in enumerate([*request.parents[1:], *request.inspirations])
    ]
    cognition = [f"- **{e.title}** ({e.source}): {e.text.strip()}" for e in request.cognition]
    insights = [f"- {i.text.strip()}" for i in request.insights]
    feedback = f"# Fix your previous attempt\n{request.feedback}\n" if request.feedback else ""
    user = render(
        "researcher",
        task,
        edit_instruction=EDIT_INSTRUCTIONS[edit_format],
        parent_score=_score(parent),
        parent_metrics=_metrics(parent),
        parent_motivation=_motivation(parent).rstrip("\n"),
        parent_analysis=_analysis(parent, request).rstrip("\n"),
        parent_code=parent.code.rstrip("\n"),
        inspirations=_section("Other programs, for inspiration", inspirations),
        cognition=_section("Relevant knowledge (human priors)", cognition),
        insights=_section("Lessons from earlier experiments", insights),
        feedback=feedback,
    )
    return [
        {"role": "system", "content": render("researcher_system", task)},
        {"role": "user", "content": user},
    ]


def apply_completion(text: str, parent_code: str, start: str, end: str) -> tuple[Answer, str]:
    """The answer parsed and the program it makes of the parent; EditError says why it cannot."""
    answer = parse_answer(text)
    return answer, apply_answer(parent_code, answer, start, end)


class Researcher:
    accepts_feedback = True

    def __init__(self, client: LLMClient, spec: LLMSpec, bandit: CostAwareBandit | None = None):
        self.client = client
        self.spec = spec
        self.bandit = bandit
        self.name = "llm"

    async def propose(self, request: ProposalRequest) -> Proposal:
        model = self.bandit.choose() if self.bandit else None
        # building the prompt and applying the answer run off the event loop (kubevolve.loop.offload)
        messages = await off_loop(researcher_messages, request, self.spec.edit_format)
        try:
            completion = await self.client.complete(messages, model=model, seed=request.seed % (2**31))
        except LLMError as err:
            raise ProposalError(str(err), kind=FailureKind.LLM_ERROR) from None
        usage = {
            "prompt_tokens": float(completion.prompt_tokens),
            "completion_tokens": float(completion.completion_tokens),
            "cost_usd": completion.cost_usd,
        }
        transcript = [completion.record("researcher" if not request.feedback else "debug retry")]
        markers = request.task.spec.evolve_block
        try:
            answer, code = await off_loop(
                apply_completion, completion.text, request.parents[0].code, markers.start, markers.end
            )
        except EditError as err:
            raise ProposalError(str(err), llm=usage, transcript=transcript, kind=err.kind) from None
        return Proposal(
            code=code,
            motivation=answer.motivation,
            proposer=f"llm:{completion.model}",
            llm=usage,
            transcript=transcript,
        )
