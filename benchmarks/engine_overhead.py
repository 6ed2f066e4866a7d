"""Engine overhead per candidate: an instant proposer and a trivial evaluator, so what is measured is the
engine itself (selection, static check, duplicate check, sandboxed evaluation round trip, store commit),
with 1k, 10k and 100k nodes already stored in the run. Target: under 20 ms per candidate on 2 cores.

    python benchmarks/engine_overhead.py [--sizes 1000,10000,100000] [--candidates 300]
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
from _sim import SimulatedProposer, simulated_task  # noqa: E402

from kubevolve.models import Node, Stage  # noqa: E402
from kubevolve.runner import Evolution  # noqa: E402
from kubevolve.spec import RunSpec  # noqa: E402
from kubevolve.store.sqlite import SQLiteStore  # noqa: E402


def prefill(store: SQLiteStore, run_id: str, task_code: str, count: int) -> float:
    started = time.monotonic()
    for i in range(count):
        node = Node(run_id=run_id, code=task_code.replace("VALUE = 0", f"VALUE = {10_000_000 + i}"))
        node.stage, node.score, node.metrics = Stage.EVALUATED, float(i % 997), {"score": float(i % 997)}
        node.parent_ids = [] if i == 0 else [node.id]
        node.insight_id = "prefilled"  # analysed already: resume must not analyse the backlog again
        store.add_node(node)
    return time.monotonic() - started


async def measure(stored: int, candidates: int, sampler: str) -> dict[str, float]:
    task = simulated_task(0, sampler=sampler)
    tmp = Path(tempfile.mkdtemp(prefix="kubevolve-overhead-"))
    store = SQLiteStore(tmp / "store.db")
    run_id = f"overhead-{stored}"
    prefill_s = prefill(store, run_id, task.initial_code, stored)
    spec = RunSpec(
        task=str(task.root),
        name=run_id,
        parallelism={"evaluators": 1, "proposers": 1},
        budget={"maxCandidates": stored + candidates},
    )
    times: list[float] = []
    last = [0.0]

    def on_progress(progress, node):
        now = time.monotonic()
        if node is not None and last[0]:
            times.append(now - last[0])
        last[0] = now

    evolution = Evolution(spec, task, store, SimulatedProposer(0), tmp / "work", on_progress=on_progress)
    started = time.monotonic()
    await evolution.run()
    total = time.monotonic() - started
    store.close()
    times.sort()
    return {
        "prefill": prefill_s,
        "startup": total - sum(times),
        "mean": sum(times) / len(times),
        "p50": times[len(times) // 2],
        "p99": times[int(len(times) * 0.99)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--sampler", default="ucb1")
    args = parser.parse_args()
    table = Table(
        title=f"engine overhead per candidate ({args.sampler} sampler, sandboxed evaluator, 1 slot)"
    )
    for column in ("stored nodes", "mean", "p50", "p99", "start-up (replay)"):
        table.add_column(column, justify="right")
    for size in (int(s) for s in args.sizes.split(",")):
        r = asyncio.run(measure(size, args.candidates, args.sampler))
        table.add_row(
            f"{size:,}", *(f"{r[k] * 1000:.1f} ms" for k in ("mean", "p50", "p99")), f"{r['startup']:.2f} s"
        )
    Console().print(table)


if __name__ == "__main__":
    main()
