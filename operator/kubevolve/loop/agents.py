"""Who proposes, who analyses and who judges in a run: the LLM Researcher when the spec configures an
endpoint (the offline proposer otherwise), the Analyzer `analyzer.mode` names, the LLM judge when
`llmJudge.enabled`, and what they share (the LLM clients, embeddings, the model bandit)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kubevolve.core.spec import RunSpec
from kubevolve.loop.analyze.analyzer import Analyzer, OfflineAnalyzer
from kubevolve.loop.learn.embeddings import Embedder, get_embedder
from kubevolve.loop.research.offline import OfflineProposer
from kubevolve.loop.research.proposal import Proposer

if TYPE_CHECKING:  # the LLM stack (openai) is imported only by runs that use it: pods start faster
    from kubevolve.loop.engineer.llm_judge import LLMJudge
    from kubevolve.loop.llm.client import LLMClient
    from kubevolve.loop.llm.ensemble import CostAwareBandit


@dataclass
class Agents:
    """Who proposes, analyses (None: `analyzer.mode: off`) and judges (None: no LLM judge), and what they
    share: the LLM clients, embeddings and the model bandit."""

    proposer: Proposer
    analyzer: Analyzer | None
    embedder: Embedder | None = None
    bandit: CostAwareBandit | None = None
    client: LLMClient | None = None  # the Researcher's
    judge: LLMJudge | None = None
    clients: list[LLMClient] = field(default_factory=list)  # the side roles' (Analyzer, judge)

    async def close(self) -> None:
        for client in [*([self.client] if self.client else []), *self.clients]:
            await client.close()


def make_agents(spec: RunSpec) -> Agents:
    """The agents the spec asks for: the LLM Researcher when `llm` has an endpoint, else the offline proposer;
    the Analyzer of `spec.analyzer_mode`; the LLM judge when enabled. Each side role has its own client."""
    mode, judging = spec.analyzer_mode, spec.llm_judge.enabled
    if not spec.llm.configured and mode != "llm" and not judging:
        return Agents(OfflineProposer(), OfflineAnalyzer() if mode == "offline" else None)
    from kubevolve.loop.llm.client import LLMClient, cheapest_model, models_of, role_spec

    agents = Agents(OfflineProposer(), OfflineAnalyzer() if mode == "offline" else None)
    if spec.llm.configured:
        from kubevolve.loop.llm.ensemble import CostAwareBandit
        from kubevolve.loop.research.researcher import Researcher

        names = [m.name for m in models_of(spec.llm)]
        agents.bandit = CostAwareBandit(names) if len(names) > 1 else None
        agents.client = LLMClient(spec.llm)
        agents.proposer = Researcher(agents.client, spec.llm, agents.bandit)
        agents.embedder = get_embedder()
    if mode == "llm":
        from kubevolve.loop.analyze.llm_analyzer import LLMAnalyzer

        default = spec.llm.analyzer_model or cheapest_model(spec.llm)
        client = LLMClient(role_spec(spec.llm, spec.analyzer, default, "analyzer"))
        agents.clients.append(client)
        agents.analyzer = LLMAnalyzer(client, client.spec.model)
    if judging:
        from kubevolve.loop.engineer.llm_judge import LLMJudge

        client = LLMClient(role_spec(spec.llm, spec.llm_judge, cheapest_model(spec.llm), "llmJudge"))
        agents.clients.append(client)
        agents.judge = LLMJudge(client, spec.llm_judge, client.spec.model)
    return agents
