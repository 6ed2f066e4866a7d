"""From what a user typed (`kubevolve run TASK_DIR|RUN.yaml`) to a ready Evolution: spec, task, run id, proposer.

Resuming is the default: running the same run again (same name, or the same task folder with no name) picks
up the unfinished run from the store instead of starting over, which is what makes `kill -9` harmless.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubevolve.core.models import RunPhase
from kubevolve.core.spec import RunSpec, SpecError, load_run_spec
from kubevolve.core.task import Task, load_task
from kubevolve.loop.analyze.analyzer import Analyzer, OfflineAnalyzer
from kubevolve.loop.learn.embeddings import Embedder, get_embedder
from kubevolve.loop.research.offline import OfflineProposer
from kubevolve.loop.research.proposal import Proposer
from kubevolve.store.base import NotFound, Store

if TYPE_CHECKING:  # the LLM stack (openai) is imported only by runs that use it: pods start faster
    from kubevolve.loop.llm.client import LLMClient
    from kubevolve.loop.llm.ensemble import CostAwareBandit

UNFINISHED = (RunPhase.PENDING, RunPhase.RUNNING, RunPhase.STOPPED)


def kubevolve_home() -> Path:
    return Path(os.environ.get("KUBEVOLVE_HOME", "~/.kubevolve")).expanduser()


def load_target(target: str | Path) -> tuple[RunSpec, Task]:
    """A task folder (run with defaults) or a run YAML file."""
    path = Path(target)
    if path.is_dir():
        spec = RunSpec(task=str(path.resolve()))
    elif path.is_file():
        spec = load_run_spec(path)
    else:
        raise SpecError(f"{target}: no such task folder or run file")
    return spec, load_task(spec.task)


def choose_run_id(spec: RunSpec, task: Task, store: Store, *, new: bool) -> tuple[str, bool]:
    """The run to use and whether it resumes an existing one."""
    if spec.name:
        try:
            store.get_run(spec.name)
        except NotFound:
            return spec.name, False
        if new:
            raise SpecError(f"run {spec.name!r} already exists; choose another name to start a new run")
        return spec.name, True
    if not new:
        for run in store.list_runs():
            if run.task == task.name and run.spec.get("task") == spec.task and run.phase in UNFINISHED:
                return run.id, True
    return f"{task.name}-{secrets.token_hex(3)}", False


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
    if not spec.llm.endpoint and not any(m.endpoint for m in spec.llm.models or []):
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


def make_proposer(spec: RunSpec) -> Proposer:
    return make_agents(spec).proposer
