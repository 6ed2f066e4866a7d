"""In-process stand-ins for `kubevolve step ...`, with the same store effects and the same idempotency, for
tests of the operator's own behaviour and for the scale benchmark (where a real evaluation would only
measure the evaluator). They read the exact command line the Job carries."""

from __future__ import annotations

import threading
from collections.abc import Callable

from kubevolve.core.models import Insight, Node, Stage
from kubevolve.store import open_store
from kubevolve.store.base import NotFound

Score = Callable[[Node], float]


def parse_command(argv: list[str]) -> dict[str, str]:
    """`kubevolve step ROLE --run R --node-id N ...` -> {"role": ROLE, "run": R, "node": N, ...}."""
    if argv[:2] != ["kubevolve", "step"] or len(argv) < 3:
        raise ValueError(f"not a step command: {argv}")
    out = {"role": argv[2]}
    it = iter(argv[3:])
    for flag in it:
        out[flag.lstrip("-").replace("node-id", "node")] = next(it)
    return out


_STORES: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()


def run_fake_step(argv: list[str], score: Score | None = None) -> None:
    args = parse_command(argv)
    with _LOCK:  # one open store per URL and tenant, shared by the fake pods (SQLiteStore is thread-safe)
        store = _STORES.get((args["store"], args["tenant"]))
        if store is None:
            store = _STORES[(args["store"], args["tenant"])] = open_store(
                args["store"], tenant=args["tenant"]
            )
    {"propose": _propose, "evaluate": _evaluate, "analyze": _analyze}[args["role"]](store, args, score)


def _propose(store, args, score) -> None:
    try:
        store.get_node(args["node"])
        return  # idempotent, like the real step
    except NotFound:
        pass
    run = args["run"]
    best = store.best_node(run)
    if best is None and store.count_nodes(run):
        raise RuntimeError(f"run {run} has no evaluated node to build on yet")
    parents = [best.id] if best else []
    code = f"# {args['node']}\nx = {store.count_nodes(run) and sum(store.count_nodes(run).values())}\n"
    node = Node(run_id=run, code=code, id=args["node"], parent_ids=parents, stage=Stage.PROPOSED)
    node.timings["propose"] = 0.001
    store.add_node(node)


def _evaluate(store, args, score) -> None:
    node = store.get_node(args["node"])
    if node.stage.is_final:
        return
    value = score(node) if score else float(node.seq)
    node.stage, node.score, node.metrics = Stage.EVALUATED, value, {"f": value}
    node.timings["full"] = 0.001
    store.update_node(node)


def _analyze(store, args, score) -> None:
    node = store.get_node(args["node"])
    if node.insight_id or node.stage not in (Stage.EVALUATED, Stage.FAILED_QUICK, Stage.FAILED_FULL):
        return
    insight = store.add_insight(
        Insight(run_id=node.run_id, text=f"node {node.id}: {node.score}", node_ids=[node.id])
    )
    node.insight_id = insight.id
    store.update_node(node)
