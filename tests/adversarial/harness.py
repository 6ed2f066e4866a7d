"""The victim: a small engine that evaluates hostile candidates, run as its own process so that whatever a
candidate does to it, pytest survives to tell.

    python tests/adversarial/harness.py MODE TASK_DIR CASES_JSON OUT_JSON

Two slots. For each case, the hostile candidate (slot 0) and an honest neighbour (slot 1) are evaluated at
the same moment, then an honest follower in the hostile candidate's slot, which would score differently if
anything the hostile one left behind reached it. The engine's environment holds a fake API key. Writes one
record per case, the uids of the slots, and whether the engine's own process is intact.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from kubevolve.core.models import Node
from kubevolve.core.task import load_task
from kubevolve.loop.engineer.engineer import Engineer
from kubevolve.loop.engineer.pool import EvaluatorPool

FAKE_KEY = "sk-kubevolve-adversarial-0123456789"


def outcome(node: Node) -> dict:
    return {
        "stage": node.stage.value,
        "score": node.score,
        "metrics": node.metrics,
        "error": node.error,
        "failure": str(getattr(node, "failure", None) or ""),
        "log_tail": node.log_tail[-1500:],
    }


def in_order(pool: EvaluatorPool) -> None:
    """Between cases every slot is free: queue them by index again (they come back in finishing order)."""
    while not pool._free.empty():
        pool._free.get_nowait()
    for slot in pool.slots:
        pool._free.put_nowait(slot)


async def evaluate_all(mode: str, task_dir: Path, cases: dict[str, str], honest: str, follower: str) -> dict:
    task = load_task(task_dir)
    pool = EvaluatorPool(task, 2, task_dir.parent / "work", mode)
    await pool.start()
    if mode == "none" and not pool.uids:
        raise SystemExit(
            "refusing: sandbox 'none' without a uid per slot would let kill(-1) reach our processes"
        )
    engineer = Engineer(task, pool)
    records = {}
    try:
        for name, code in cases.items():
            # hand out slot 0 first: the hostile candidate gets it, the neighbour slot 1, the follower slot 0
            in_order(pool)
            hostile = engineer.evaluate(Node(run_id="adv", code=code))
            neighbour = engineer.evaluate(Node(run_id="adv", code=honest))
            hostile_node, neighbour_node = await asyncio.gather(hostile, neighbour)
            in_order(pool)
            follower_node = await engineer.evaluate(Node(run_id="adv", code=follower))
            records[name] = {
                "hostile": outcome(hostile_node),
                "neighbour": outcome(neighbour_node),
                "follower": outcome(follower_node),
            }
    finally:
        uids = [u.uid for u in pool.uids]
        await pool.close()
    return {"cases": records, "uids": uids, "pid": os.getpid()}


def main() -> None:
    mode, task_dir, cases_path, out_path = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    spec = json.loads(Path(cases_path).read_text())
    result = asyncio.run(evaluate_all(mode, task_dir, spec["cases"], spec["honest"], spec["follower"]))
    result["key_still_set"] = os.environ.get("OPENAI_API_KEY") == FAKE_KEY
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
