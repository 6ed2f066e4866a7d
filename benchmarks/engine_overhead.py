"""Engine overhead per candidate: an instant proposer and a trivial evaluator, so what is measured is the
engine itself (selection, static check, duplicate check, sandboxed evaluation round trip, store commit),
with 1k, 10k and 100k nodes already stored in the run. Target: under 20 ms per candidate on 2 cores.

With `--llm`, the proposer is the LLM Researcher talking to a local OpenAI-protocol server that answers at
once, and the Analyzer is the LLM one: what is measured is then everything around the LLM calls (prompt
building, retrieval of insights and cognition by MiniLM similarity over one stored insight per node, parsing,
the embedding novelty filter, the analysis and its insight's embedding), still without the LLM's latency.

    python benchmarks/engine_overhead.py [--sizes 1000,10000,100000] [--candidates 300] [--llm]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
# the OpenAI-protocol server of the tests
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "kit"))
import numpy as np  # noqa: E402
from _sim import SimulatedProposer, simulated_task  # noqa: E402
from openai_server import OpenAIServer, Reply  # noqa: E402

from kubevolve.core.models import Insight, Node, Stage  # noqa: E402
from kubevolve.core.spec import RunSpec  # noqa: E402
from kubevolve.loop.agents import make_agents  # noqa: E402
from kubevolve.runtime.local import Evolution  # noqa: E402
from kubevolve.store.sqlite import SQLiteStore  # noqa: E402

WORDS = [
    "loop",
    "cache",
    "vector",
    "branch",
    "merge",
    "split",
    "tile",
    "fuse",
    "unroll",
    "prefetch",
    "batch",
    "shard",
    "reorder",
    "widen",
]


def prefill(store: SQLiteStore, run_id: str, task_code: str, count: int, insights: bool) -> float:
    started = time.monotonic()
    rng = np.random.default_rng(0)
    for i in range(count):
        node = Node(run_id=run_id, code=task_code.replace("VALUE = 0", f"VALUE = {10_000_000 + i}"))
        node.stage, node.score, node.metrics = Stage.EVALUATED, float(i % 997), {"score": float(i % 997)}
        node.parent_ids = [] if i == 0 else [node.id]
        node.insight_id = "prefilled"  # analysed already: resume must not analyse the backlog again
        store.add_node(node)
        if insights:  # what the Researcher retrieves from: one insight per analysed node
            vector = rng.standard_normal(384).astype(np.float32)
            vector /= np.linalg.norm(vector)
            text = f"{' '.join(rng.choice(WORDS, 6))}: the score moved by {i % 7}"
            store.add_insight(
                Insight(run_id=run_id, text=text, node_ids=[node.id], embedding=vector.tolist())
            )
    return time.monotonic() - started


def instant_llm(body: dict, index: int) -> Reply:
    """Answers at once: an insight for the Analyzer, a new block for the Researcher (novel: fresh words)."""
    if body["messages"][0]["content"].startswith("You are the Analyzer"):
        return Reply(f"INSIGHT: candidate {index} changed VALUE; the score followed VALUE modulo 1000.")
    rng = np.random.default_rng(index)
    idea = " ".join(rng.choice(WORDS, 8))
    return Reply(f"MOTIVATION: {idea}.\n```python\n# idea {index}: {idea}\nVALUE = {index}\n```\n")


async def measure(stored: int, candidates: int, sampler: str, llm_url: str | None = None) -> dict[str, float]:
    task = simulated_task(0, sampler=sampler)
    tmp = Path(tempfile.mkdtemp(prefix="kubevolve-overhead-"))
    store = SQLiteStore(tmp / "store.db")
    run_id = f"overhead-{stored}"
    prefill_s = prefill(store, run_id, task.initial_code, stored, insights=llm_url is not None)
    spec = RunSpec(
        task=str(task.root),
        name=run_id,
        parallelism={"evaluators": 1, "proposers": 1},
        budget={"maxCandidates": stored + candidates},
        **({"llm": {"endpoint": llm_url, "model": "instant"}} if llm_url else {}),
    )
    times: list[float] = []
    last = [0.0]

    def on_commit(progress, node):
        now = time.monotonic()
        if node is not None and last[0]:
            times.append(now - last[0])
        last[0] = now

    if llm_url:
        agents = make_agents(spec)
        evolution = Evolution.of_agents(
            spec,
            task,
            store,
            agents,
            tmp / "work",
            observers=[on_commit],
        )
    else:
        evolution = Evolution(spec, task, store, SimulatedProposer(0), tmp / "work", observers=[on_commit])
    started = time.monotonic()
    await evolution.run()
    total = time.monotonic() - started
    if llm_url:
        await agents.close()
    outcomes = store.count_nodes(run_id)
    store.close()
    times.sort()
    return {
        "prefill": prefill_s,
        "startup": total - sum(times),
        "mean": sum(times) / len(times),
        "p50": times[len(times) // 2],
        "p99": times[int(len(times) * 0.99)],
        "evaluated": outcomes.get(Stage.EVALUATED, 0) - stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--sampler", default="ucb1")
    parser.add_argument(
        "--llm", action="store_true", help="the LLM Researcher and Analyzer, answered at once"
    )
    args = parser.parse_args()
    who = "LLM Researcher and Analyzer (instant answers)" if args.llm else "instant proposer"
    table = Table(
        title=f"engine overhead per candidate ({who}, {args.sampler} sampler, sandboxed evaluator, 1 slot)"
    )
    for column in ("stored nodes", "mean", "p50", "p99", "evaluated", "start-up (replay)"):
        table.add_column(column, justify="right")
    with OpenAIServer(instant_llm) as llm:
        for size in (int(s) for s in args.sizes.split(",")):
            r = asyncio.run(measure(size, args.candidates, args.sampler, llm.url if args.llm else None))
            table.add_row(
                f"{size:,}",
                *(f"{r[k] * 1000:.1f} ms" for k in ("mean", "p50", "p99")),
                f"{r['evaluated']} / {args.candidates}",
                f"{r['startup']:.2f} s",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
