"""The LLM Analyzer: reads one experiment (diff, metrics against parent and best, evaluator artifacts) and
writes a short insight that later Researcher prompts retrieve."""

from __future__ import annotations

from kubevolve.core.models import Node, Stage
from kubevolve.loop.analyze.analyzer import Analysis, AnalysisRequest
from kubevolve.loop.llm.client import LLMClient, LLMError
from kubevolve.loop.llm.prompts import render


def _metrics(node: Node | None) -> str:
    if node is None or not node.metrics:
        return "none"
    return ", ".join(f"{k}={v:.6g}" for k, v in node.metrics.items())


class LLMAnalyzer:
    name = "llm"

    def __init__(self, client: LLMClient, model: str | None = None):
        self.client = client
        self.model = model

    async def analyze(self, request: AnalysisRequest) -> Analysis:
        node, task = request.node, request.task
        outcome = "evaluated" if node.stage is Stage.EVALUATED else f"{node.stage}: {node.error}"
        artifacts = "\n".join(f"### {k}\n{v[-2000:]}" for k, v in node.artifacts.items()) or "none"
        if node.stage is not Stage.EVALUATED and node.log_tail.strip():
            artifacts += f"\n### log tail\n{node.log_tail[-1500:]}"
        user = render(
            "analyzer",
            task,
            task_name=task.name,
            metric=task.spec.metric,
            direction=task.spec.direction,
            motivation=node.motivation or "none given",
            diff=(node.diff or "(no diff: the initial program)")[-6000:],
            outcome=outcome,
            metrics=_metrics(node),
            parent_metrics=_metrics(request.parent),
            best_metrics=_metrics(request.best),
            artifacts=artifacts,
        )
        messages = [
            {"role": "system", "content": render("analyzer_system", task)},
            {"role": "user", "content": user},
        ]
        try:
            completion = await self.client.complete(messages, model=self.model)
        except LLMError as err:
            return Analysis(text=f"(analysis unavailable: {err})", analyzer=self.name)
        return Analysis(
            text=completion.text.strip(),
            analyzer=self.name,
            llm={
                "prompt_tokens": float(completion.prompt_tokens),
                "completion_tokens": float(completion.completion_tokens),
                "cost_usd": completion.cost_usd,
            },
            transcript=[completion.record("analyzer")],
        )
