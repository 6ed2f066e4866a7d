"""Who proposes and who analyses in a run: the LLM Researcher and Analyzer when the spec configures an
endpoint, the offline pair otherwise, and what they share (the LLM client, embeddings, the model bandit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubevolve.core.spec import RunSpec
from kubevolve.loop.analyze.analyzer import Analyzer, OfflineAnalyzer
from kubevolve.loop.learn.embeddings import Embedder, get_embedder
from kubevolve.loop.research.offline import OfflineProposer
from kubevolve.loop.research.proposal import Proposer

if TYPE_CHECKING:  # the LLM stack (openai) is imported only by runs that use it: pods start faster
    from kubevolve.loop.llm.client import LLMClient
    from kubevolve.loop.llm.ensemble import CostAwareBandit


@dataclass
class Agents:
    """Who proposes and who analyses, and what they share: the LLM client, embeddings and the model bandit."""

    proposer: Proposer
    analyzer: Analyzer
    embedder: Embedder | None = None
    bandit: CostAwareBandit | None = None
    client: LLMClient | None = None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def make_agents(spec: RunSpec) -> Agents:
    """The LLM Researcher and Analyzer when an endpoint is configured; the offline pair otherwise."""
    if not spec.llm.configured:
        return Agents(OfflineProposer(), OfflineAnalyzer())
    from kubevolve.loop.analyze.llm_analyzer import LLMAnalyzer
    from kubevolve.loop.llm.client import LLMClient, models_of
    from kubevolve.loop.llm.ensemble import CostAwareBandit
    from kubevolve.loop.research.researcher import Researcher

    client = LLMClient(spec.llm)
    names = [m.name for m in models_of(spec.llm)]
    bandit = CostAwareBandit(names) if len(names) > 1 else None
    analyzer_model = (
        spec.llm.analyzer_model
        or min(models_of(spec.llm), key=lambda m: m.input_cost_per_mtok + m.output_cost_per_mtok).name
    )
    return Agents(
        proposer=Researcher(client, spec.llm, bandit),
        analyzer=LLMAnalyzer(client, analyzer_model),
        embedder=get_embedder(),
        bandit=bandit,
        client=client,
    )
