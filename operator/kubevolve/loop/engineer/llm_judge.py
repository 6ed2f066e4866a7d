"""The optional LLM judge (`llmJudge` in the RunSpec; off by default): before a candidate is evaluated, an LLM
reads it against its nearest neighbours (the most similar programs already tried) and the task's rules, and
passes it or rejects it with a reason (FailureKind.LLM_JUDGE_REJECTED). Evaluations are the expensive
resource; the judge spends a short LLM call to save one on an idea the loop already tried in other words.

The judge never loses a candidate by its own fault: an answer without a readable verdict, or an endpoint that
fails, passes the candidate with a warning (logged, and kept on the node as verdict `malformed` or
`unavailable`). Its tokens and cost are kept on the node (`judge_*` keys of `node.llm`) and count in the
run's LLM cost (`budget.llm_cost`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from kubevolve.core.models import Node, Stage
from kubevolve.core.spec import LLMJudgeSpec
from kubevolve.core.task import Task
from kubevolve.loop.llm.client import LLMClient, LLMError
from kubevolve.loop.llm.prompts import evolve_blocks, render

log = logging.getLogger(__name__)

CODE_CHARS = 4000  # of the candidate's evolve block and of each neighbour's
_VERDICT = re.compile(r"^[\s#*_>-]*verdict[\s*_]*:[\s*_]*(pass|reject)\b", re.IGNORECASE | re.MULTILINE)
_REASON = re.compile(r"^[\s#*_>-]*reason[\s*_]*:[\s*_]*(.+)$", re.IGNORECASE | re.MULTILINE)

VerdictKind = Literal["pass", "reject", "malformed", "unavailable"]


@dataclass
class Verdict:
    verdict: VerdictKind
    reason: str
    llm: dict[str, float] = field(default_factory=dict)  # prompt_tokens, completion_tokens, cost_usd
    transcript: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rejects(self) -> bool:
        return self.verdict == "reject"


def parse_verdict(text: str) -> tuple[VerdictKind, str]:
    """(pass | reject | malformed, reason). Two different VERDICT lines are as unreadable as none."""
    verdicts = {m.group(1).lower() for m in _VERDICT.finditer(text)}
    reason = _REASON.search(text)
    why = reason.group(1).strip() if reason else ""
    if len(verdicts) != 1:
        found = "no VERDICT line" if not verdicts else "both PASS and REJECT"
        return "malformed", f"the judge's answer has {found}: {text.strip()[:200]!r}"
    verdict: VerdictKind = "pass" if verdicts == {"pass"} else "reject"
    return verdict, why or "no reason given"


def task_rules(task: Task) -> str:
    """What the task allows, from its task.yaml (its description, above in the prompt, says the rest)."""
    markers = task.spec.evolve_block
    checks = task.spec.checks
    rules = [f"- Only the code between `{markers.start}` and `{markers.end}` may change."]
    if checks.forbidden_imports:
        rules.append("- These modules must not be imported: " + ", ".join(checks.forbidden_imports) + ".")
    if checks.required_names:
        rules.append("- These top-level names must stay defined: " + ", ".join(checks.required_names) + ".")
    rules.append(f"- The program must stay under {checks.max_code_bytes} bytes.")
    return "\n".join(rules)


def _standing(node: Node) -> str:
    if node.stage is Stage.EVALUATED and node.score is not None:
        return f"evaluated, score {node.score:.6g}"
    return f"{node.stage}: {node.error}" if node.error else str(node.stage)


def judge_messages(
    task: Task, node: Node, neighbours: list[tuple[Node, float | None]]
) -> list[dict[str, str]]:
    shown = [
        f"## Neighbour {i} ("
        + (f"similarity {similarity:.3f}; " if similarity is not None else "")
        + f"{_standing(n)})\nMotivation: {n.motivation.strip() or 'none given'}\n"
        f"```python\n{evolve_blocks(task, n.code, CODE_CHARS)}\n```"
        for i, (n, similarity) in enumerate(neighbours, start=1)
    ]
    user = render(
        "judge",
        task,
        rules=task_rules(task),
        motivation=node.motivation.strip() or "none given",
        diff=node.diff.rstrip("\n")[-CODE_CHARS:] or "(no diff)",
        code=evolve_blocks(task, node.code, CODE_CHARS),
        neighbours="\n\n".join(shown) or "none yet",
    )
    return [
        {"role": "system", "content": render("judge_system", task)},
        {"role": "user", "content": user},
    ]


class LLMJudge:
    name = "llm judge"

    def __init__(self, client: LLMClient, spec: LLMJudgeSpec, model: str | None = None):
        self.client = client
        self.spec = spec
        self.model = model

    async def judge(self, task: Task, node: Node, neighbours: list[tuple[Node, float | None]]) -> Verdict:
        """Pass or reject `node`; never raises for a bad answer or a failed request (the candidate passes)."""
        try:
            completion = await self.client.complete(judge_messages(task, node, neighbours), model=self.model)
        except LLMError as err:
            log.warning("the LLM judge failed on node %s; the candidate passes unjudged: %s", node.id, err)
            return Verdict("unavailable", f"the judge's request failed: {err}")
        verdict, reason = parse_verdict(completion.text)
        if verdict == "malformed":
            log.warning("the LLM judge's answer on node %s has no verdict; the candidate passes", node.id)
        return Verdict(
            verdict,
            reason,
            llm={
                "prompt_tokens": float(completion.prompt_tokens),
                "completion_tokens": float(completion.completion_tokens),
                "cost_usd": completion.cost_usd,
            },
            transcript=[completion.record("llm judge")],
        )
