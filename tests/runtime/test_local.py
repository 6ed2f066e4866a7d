"""The local runtime end to end: the pipelined loop improves a program, honours budgets and resumes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from kubevolve.core.models import Stage
from kubevolve.core.spec import RunSpec
from kubevolve.core.task import load_task
from kubevolve.loop.agents import Agents
from kubevolve.loop.analyze.analyzer import OfflineAnalyzer
from kubevolve.loop.learn.embeddings import EmbeddingService
from kubevolve.loop.llm.client import LLMClient
from kubevolve.loop.research.offline import OfflineProposer
from kubevolve.loop.research.researcher import Researcher
from kubevolve.runtime.local import Evolution
from kubevolve.store.sqlite import SQLiteStore
from tests.kit.openai_server import OpenAIServer, Reply
from tests.kit.toy_task import write_task


def evolve(task_dir: Path, store, tmp_path: Path, name: str = "run", **spec_fields):
    spec = RunSpec(task=str(task_dir), name=name, **spec_fields)
    evolution = Evolution(spec, load_task(task_dir), store, OfflineProposer(), tmp_path / "work")
    return evolution, asyncio.run(evolution.run())


def test_loop_improves_the_program_and_commits_every_candidate(toy_task, tmp_path, store):
    seen = []
    spec = RunSpec(task=str(toy_task), name="run", budget={"maxCandidates": 40})
    evolution = Evolution(
        spec,
        load_task(toy_task),
        store,
        OfflineProposer(),
        tmp_path / "work",
        observers=[lambda progress, node: seen.append(node)],
    )
    record = asyncio.run(evolution.run())
    assert record.phase == "Succeeded"
    assert "budget reached: 40 candidates" in record.message
    nodes = store.list_nodes("run")
    assert [n.seq for n in nodes] == list(range(40))
    assert len([n for n in seen if n is not None]) == 40  # every commit reported as it happened
    initial = nodes[0]
    assert initial.parent_ids == [] and initial.stage is Stage.EVALUATED
    best = store.best_node("run")
    assert best.score > initial.score  # offline search made real progress on f
    children = [n for n in nodes[1:] if n.stage is Stage.EVALUATED]
    assert children and all(n.parent_ids and n.diff.startswith("--- parent") for n in children)
    assert all(n.proposer == "offline" and n.motivation.startswith("offline proposer") for n in children)
    analysed = [n for n in nodes if n.stage in (Stage.EVALUATED, Stage.FAILED_QUICK)]
    insights = {i.id: i for i in store.list_insights("run")}
    assert analysed and all(n.insight_id in insights for n in analysed)  # every experiment was analysed
    assert insights[best.insight_id].node_ids == [best.id]


def test_target_score_stops_the_run(toy_task, tmp_path, store):
    _, record = evolve(toy_task, store, tmp_path, budget={"maxCandidates": 500, "targetScore": -8.0})
    assert record.phase == "Succeeded" and record.message.startswith("target reached")
    assert store.best_node("run").score >= -8.0
    assert sum(store.count_nodes("run").values()) < 500


def test_consecutive_failures_fail_the_run(tmp_path, store):
    task = write_task(
        tmp_path / "flaky",
        evaluator="def evaluate(path, stage):\n    if 'x = 0.5\\n    y = 0.5' in open(path).read():\n        return {'f': 0.0}\n"
        "    raise RuntimeError('every change breaks it')\n",
    )
    _, record = evolve(task, store, tmp_path, budget={"maxCandidates": 100, "maxFailures": 5})
    assert record.phase == "Failed"
    assert "5 consecutive failed candidates (maxFailures 5)" in record.message
    failed = store.list_nodes("run", stages=[Stage.FAILED_QUICK])
    assert failed and "RuntimeError: every change breaks it" in failed[0].error


def test_initial_program_failure_is_reported(tmp_path, store):
    task = write_task(tmp_path / "bad", evaluator="def evaluate(path, stage):\n    return {'g': 1.0}\n")
    _, record = evolve(task, store, tmp_path)
    assert record.phase == "Failed"
    assert (
        "the initial program failed: quick stage: bad metrics: the primary metric 'f' is missing"
        in record.message
    )


def test_early_rejection_threshold(tmp_path, store):
    from tests.kit.toy_task import TOY_TASK_YAML

    text = TOY_TASK_YAML.format(timeout=5).replace(
        "    resources:", "    rejectBelow: {f: -6.0}\n    resources:"
    )
    task = write_task(tmp_path / "thr", yaml_text=text)
    _, record = evolve(task, store, tmp_path)
    assert record.phase == "Failed"
    assert "quick stage: f = -8.5 is below the threshold -6" in record.message


def test_two_runs_in_one_store_stay_apart(toy_task, tmp_path, store):
    evolve(toy_task, store, tmp_path, name="a", budget={"maxCandidates": 8})
    evolve(toy_task, store, tmp_path, name="b", budget={"maxCandidates": 5}, seed=7)
    assert sum(store.count_nodes("a").values()) == 8
    assert sum(store.count_nodes("b").values()) == 5
    assert {n.run_id for n in store.list_nodes("b")} == {"b"}


def _kubevolve(*args: str, home: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "KUBEVOLVE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "kubevolve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
        **kwargs,
    )


def test_sigkill_mid_run_then_resume_loses_nothing_and_repeats_nothing(tmp_path, kubevolve_home):
    slow = write_task(
        tmp_path / "slow",
        evaluator="import time, importlib.util\n\ndef evaluate(path, stage):\n    time.sleep(0.1)\n"
        "    spec = importlib.util.spec_from_file_location('c', path)\n    m = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(m)\n    x, y = m.solve()\n    return {'f': -(x - 3) ** 2 - (y + 1) ** 2}\n",
    )
    db = kubevolve_home / "kubevolve.db"
    proc = _kubevolve("run", str(slow), "--max-candidates", "40", home=kubevolve_home)
    deadline = time.monotonic() + 60
    before: list = []
    while time.monotonic() < deadline:
        if db.exists():
            store = SQLiteStore(db)
            runs = store.list_runs()
            before = store.list_nodes(runs[0].id) if runs else []
            store.close()
            if len(before) >= 12:
                break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 12 <= len(before) < 40, "the run must be killed mid-flight"

    resumed = _kubevolve("run", str(slow), "--max-candidates", "40", "--json", home=kubevolve_home)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "resuming run" in err
    summary = json.loads(out)
    store = SQLiteStore(db)
    nodes = store.list_nodes(summary["id"])
    store.close()
    assert summary["candidates"] == 40 and len(nodes) == 40
    assert [n.seq for n in nodes] == list(range(40))
    before_ids = {n.id for n in before}
    assert before_ids <= {n.id for n in nodes}  # nothing committed before the kill was lost
    assert len([n for n in nodes if not n.parent_ids]) == 1  # the initial program was not evaluated again
    evaluated = [n.code_hash for n in nodes if n.stage is Stage.EVALUATED]
    assert len(evaluated) == len(set(evaluated))  # no program evaluated twice


# ---- start-up: the embedding model loads in the background --------------------------------------------------
PRIOR = "## Maximising a concave quadratic\nFor f(x) = -(x - a)^2 the maximum is at x = a.\nSource: elementary calculus\n"


class HeldModel:
    """An embedding model whose load waits until the test lets it finish."""

    dim = 4

    def __init__(self, release: threading.Event):
        self.release = release

    def load(self) -> None:
        assert self.release.wait(60), "the model was never released"

    def encode(self, texts):
        return np.asarray([[1.0, 0.1 * len(t), 0.0, 0.0] for t in texts], dtype=np.float32)


def _llm_evolution(task_dir: Path, store, tmp_path: Path, url: str, embedder, **fields) -> Evolution:
    spec = RunSpec(task=str(task_dir), name="run", llm={"endpoint": url, "model": "m"}, **fields)
    agents = Agents(Researcher(LLMClient(spec.llm), spec.llm), OfflineAnalyzer(), embedder=embedder)
    return Evolution.of_agents(
        spec,
        load_task(task_dir),
        store,
        agents,
        tmp_path / "work",
    )


def _answers(release: threading.Event, seen_held: list[bool]):
    def answer(body, index) -> Reply:
        seen_held.append(not release.is_set())  # was the model still loading when this proposal was made?
        release.set()
        return Reply(
            f"MOTIVATION: x = {index}.\n<<<<<<< SEARCH\n    x = 0.5\n=======\n    x = {index}.5\n>>>>>>> REPLACE\n"
        )

    return answer


def test_proposals_start_before_the_embedding_model_is_loaded(toy_task, store, tmp_path):
    """The first LLM request is made while the model still loads (it is released only by that request), without
    retrieved cognition; once retrieval is ready, proposals get it."""
    (toy_task / "cognition").mkdir()
    (toy_task / "cognition" / "priors.md").write_text(PRIOR)
    release, seen_held = threading.Event(), []
    with OpenAIServer(_answers(release, seen_held)) as server:
        embedder = EmbeddingService(HeldModel(release))
        evolution = _llm_evolution(
            toy_task,
            store,
            tmp_path,
            server.url,
            embedder,
            budget={"maxCandidates": 8},
            parallelism={"evaluators": 1, "proposers": 1},
        )
        record = asyncio.run(evolution.run())
    assert record.phase == "Succeeded" and seen_held[0]
    nodes = store.list_nodes("run")
    assert nodes[1].retrieved == {"insights": [], "cognition": []}
    prior = store.list_cognition("toy")[0]  # stored once the model was loaded
    assert prior.embedding is not None and any(prior.id in n.retrieved["cognition"] for n in nodes[2:])


def test_sequential_runs_wait_for_retrieval(toy_task, store, tmp_path):
    (toy_task / "cognition").mkdir()
    (toy_task / "cognition" / "priors.md").write_text(PRIOR)
    release, seen_held = threading.Event(), []
    timer = threading.Timer(0.3, release.set)
    timer.start()
    with OpenAIServer(_answers(release, seen_held)) as server:
        evolution = _llm_evolution(
            toy_task,
            store,
            tmp_path,
            server.url,
            EmbeddingService(HeldModel(release)),
            budget={"maxCandidates": 3},
            parallelism={"evaluators": 1, "proposers": 1, "proposalsAhead": 0},
        )
        asyncio.run(evolution.run())
        prompts = server.prompts()
    timer.cancel()
    assert seen_held == [False, False]  # no proposal was made while the model loaded
    assert all("Maximising a concave quadratic" in p for p in prompts)
