"""Evaluator occupancy of the pipelined loop: busy slot time / total slot time.

Simulated evaluators (a fixed sleep inside the real sandboxed workers) and a simulated proposer (a fixed
latency, like an LLM call). Proposal capacity suffices when proposers / latency >= slots / eval time; then the
target is >= 95%. A loop where a slot also waits for the LLM would cap at eval / (latency + eval).

    python benchmarks/occupancy.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _sim import SimulatedProposer, simulated_task  # noqa: E402

from kubevolve.core.spec import RunSpec  # noqa: E402
from kubevolve.runtime.local import Evolution  # noqa: E402
from kubevolve.store.sqlite import SQLiteStore  # noqa: E402

EVAL_SECONDS = 0.25
LATENCY = 0.5
CANDIDATES_PER_SLOT = 24


async def measure(slots: int, proposers: int, latency: float) -> tuple[float, float, float]:
    task = simulated_task(EVAL_SECONDS)
    tmp = Path(tempfile.mkdtemp(prefix="kubevolve-occ-"))
    store = SQLiteStore(tmp / "store.db")
    spec = RunSpec(
        task=str(task.root),
        name=f"occ-{slots}",
        parallelism={"evaluators": slots, "proposers": proposers, "proposalsAhead": slots},
        budget={"maxCandidates": 1 + slots * CANDIDATES_PER_SLOT},
    )
    evolution = Evolution(spec, task, store, SimulatedProposer(latency), tmp / "work")
    started = time.monotonic()
    await evolution.run()
    wall = time.monotonic() - started
    occupancy = evolution.progress.occupancy
    rate = (spec.budget.max_candidates - 1) / wall
    store.close()
    return occupancy, rate, EVAL_SECONDS / (latency + EVAL_SECONDS)


def main() -> None:
    table = Table(
        title=f"evaluator occupancy (eval {EVAL_SECONDS}s, {CANDIDATES_PER_SLOT} candidates per slot)"
    )
    columns = (
        "slots",
        "proposers",
        "LLM latency",
        "capacity suffices",
        "occupancy",
        "candidates/s",
        "serial cap",
    )
    for column in columns:
        table.add_column(column, justify="right")
    cases = [(slots, max(1, int(slots * LATENCY / EVAL_SECONDS * 1.5))) for slots in (1, 4, 16)]
    cases.append((4, 1))  # too few proposers: occupancy is bounded by proposal capacity, as it must be
    for slots, proposers in cases:
        occupancy, rate, cap = asyncio.run(measure(slots, proposers, LATENCY))
        suffices = proposers / LATENCY >= slots / EVAL_SECONDS
        table.add_row(
            str(slots),
            str(proposers),
            f"{LATENCY}s",
            "yes" if suffices else "no",
            f"{occupancy:.1%}",
            f"{rate:.1f}",
            f"{cap:.0%}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
