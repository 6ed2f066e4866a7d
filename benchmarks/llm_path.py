"""The LLM path against the evaluation path: what the engine costs around LLM calls, how fast a run starts and
stops, and whether evaluators stay busy with fresh parents as the LLM's latency grows.

A local OpenAI-protocol server (_llm_workload.py: tests/kit/openai_server.py in a process of its own so that it
takes no GIL from the engine) answers every Researcher request after a fixed latency with one valid SEARCH/REPLACE edit of
the program's one constant (`VALUE = parent's value + a random step`), and every Analyzer request with an
insight. The task's evaluator sleeps a fixed time (the emulated cost, inside the real sandboxed workers) and
scores `VALUE`, so the best score keeps rising only if proposals build on fresh parents.

- `overhead`: W=2, instant LLM and evaluator: wall time per candidate, which is then all engine (selection,
  retrieval and its embeddings, prompt, parsing, checks, sandboxed round trip, store, analysis);
- `startup`: `kubevolve run` as a command (W=2, instant LLM and evaluator): launch to first LLM request, and
  shutdown: from the last candidate stored to the process's exit;
- `grid`: W in {2, 4, 8, 16} against LLM latency 0, 0.5, 1 and 2 times the evaluation time: occupancy, total
  wall against the ideal N x eval / W, children of the initial program against the fewest a run that keeps
  every slot busy can have (`pacing.initial_children`) and the first wave (W), the most children of one
  parent, the best score after every W commits, the novelty rejection rate;
- `issue`: the two deep-pipeline settings of issue 16 (W=16, LLM 1 s, eval 4 s, 64 candidates; W=8, LLM 4 s,
  eval 2 s, 48 candidates).

    python benchmarks/llm_path.py [overhead|startup|grid|issue|all] [--eval 1.0] [--jitter 0.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # the workload shared with peers.py

from _llm_workload import Server, load, value_of, write_task  # noqa: E402


# ---- one run in this process ------------------------------------------------------------------------------
@dataclass
class RunFigures:
    wall: float  # from the first proposal after the initial program to the last commit
    per_candidate_ms: float
    occupancy: float
    seed_children: int
    most_children: int
    best: float
    best_by_wave: list[float]  # the best score after every `slots` commits (after the initial program's)
    rejected: int
    repeats: int  # of the rejected, those whose VALUE is one a candidate that ran already had
    candidates: int


async def one_run(
    url: str,
    slots: int,
    eval_seconds: float,
    candidates: int,
    jitter: float,
    workdir: Path,
    *,
    warm: bool = False,
) -> RunFigures:
    """One run of the benchmark task against the server at `url`. `warm`: the embedding model is loaded
    before the run starts, so that every proposal retrieves (and pays for its embeddings)."""
    from kubevolve.core.models import Stage
    from kubevolve.core.spec import RunSpec
    from kubevolve.core.task import load_task
    from kubevolve.loop.agents import make_agents
    from kubevolve.loop.learn.embeddings import EmbeddingService
    from kubevolve.runtime.local import Evolution
    from kubevolve.store.sqlite import SQLiteStore

    task_dir = write_task(workdir / "task", eval_seconds, jitter)
    store = SQLiteStore(workdir / "store.db")
    spec = RunSpec(
        task=str(task_dir),
        name="bench",
        llm={"endpoint": url, "model": "fixed-latency", "maxConcurrency": 256, "maxRetries": 0},
        parallelism={"evaluators": slots, "proposers": 256},
        budget={"maxCandidates": candidates},
    )
    agents = make_agents(spec)
    if warm and isinstance(agents.embedder, EmbeddingService):
        agents.embedder.load_in_background()
        await agents.embedder.wait_ready()
    commits: list[float] = []
    evolution = Evolution.of_agents(
        spec,
        load_task(task_dir),
        store,
        agents,
        workdir / "work",
        observers=[lambda progress, node: commits.append(time.monotonic()) if node is not None else None],
    )
    try:
        await evolution.run()
    finally:
        await agents.close()
    nodes = store.list_nodes("bench")
    store.close()
    seed = nodes[0]
    best_by_wave, best_so_far = [], float("-inf")
    for index, node in enumerate(nodes[1:], 1):
        if node.score is not None:
            best_so_far = max(best_so_far, node.score)
        if index % slots == 0 or index == len(nodes) - 1:
            best_by_wave.append(best_so_far)
    children = Counter(n.parent_ids[0] for n in nodes[1:] if n.parent_ids)
    seed_children = [n for n in nodes[1:] if n.parent_ids and n.parent_ids[0] == seed.id]
    wall = commits[-1] - commits[0]
    rejected = [n for n in nodes if n.stage is Stage.REJECTED_NOVELTY]
    ran = {value_of(n.code) for n in nodes if n.stage is not Stage.REJECTED_NOVELTY}
    return RunFigures(
        wall=wall,
        per_candidate_ms=1000 * wall / max(1, len(commits) - 1),
        occupancy=evolution.progress.occupancy,
        seed_children=len(seed_children),
        most_children=max(children.values(), default=0),
        best=max((n.score for n in nodes if n.score is not None), default=float("nan")),
        best_by_wave=best_by_wave,
        rejected=len(rejected),
        repeats=sum(1 for n in rejected if value_of(n.code) in ran),
        candidates=len(nodes),
    )


def run_setting(
    slots: int, latency: float, eval_seconds: float, candidates: int, jitter: float, *, warm: bool = False
) -> RunFigures:
    server = Server(latency)
    try:
        with tempfile.TemporaryDirectory(prefix="kubevolve-llm-path-") as tmp:
            return asyncio.run(
                one_run(server.url, slots, eval_seconds, candidates, jitter, Path(tmp), warm=warm)
            )
    finally:
        server.close()


# ---- the command, from launch to exit -------------------------------------------------------------------
def startup(candidates: int = 30) -> dict[str, float]:
    """`kubevolve run` (W=2, instant LLM and evaluator) as a process: launch to the first LLM request, and
    shutdown (the last candidate stored to the process's exit)."""
    from kubevolve.store.sqlite import SQLiteStore

    server = Server(0.0)
    try:
        with tempfile.TemporaryDirectory(prefix="kubevolve-startup-") as tmp:
            root = Path(tmp)
            task_dir = write_task(root / "task", 0.0, 0.0)
            spec = {
                "task": str(task_dir),
                "llm": {"endpoint": server.url, "model": "instant"},
                "parallelism": {"evaluators": 2},
                "budget": {"maxCandidates": candidates},
            }
            (root / "run.yaml").write_text(json.dumps(spec))
            env = {**os.environ, "KUBEVOLVE_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1"}
            env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), env.get("PYTHONPATH", "")])
            launched = time.time()
            proc = subprocess.Popen(
                [sys.executable, "-m", "kubevolve", "run", str(root / "run.yaml"), "--json"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            db, done = root / "home" / "kubevolve.db", None
            while proc.poll() is None:
                if done is None and db.exists():
                    try:
                        store = SQLiteStore(db, read_only=True)
                        runs = store.list_runs()
                        if runs and sum(store.count_nodes(runs[0].id).values()) >= candidates:
                            done = time.time()
                        store.close()
                    except Exception:  # the schema is being created: look again
                        pass
                time.sleep(0.005)
            exited = time.time()
            first = min(r["t"] for r in server.requests() if r["role"] == "researcher")
            return {
                "launch_to_first_request": first - launched,
                "shutdown": exited - (done or exited),
                "returncode": float(proc.returncode),
            }
    finally:
        server.close()


# ---- the tables -------------------------------------------------------------------------------------------
def print_overhead(candidates: int) -> None:
    for warm in (False, True):
        r = run_setting(2, 0.0, 0.0, candidates, 0.0, warm=warm)
        model = "loaded before the run (every proposal retrieves)" if warm else "loading as the run starts"
        print(
            f"per-candidate overhead (W=2, instant LLM and evaluator, {r.candidates} candidates, embedding "
            f"model {model}): {r.per_candidate_ms:.1f} ms; novelty rejections {r.rejected} ({r.repeats} repeats "
            f"of a value already run); {load()}"
        )


def print_startup() -> None:
    r = startup()
    print(
        f"kubevolve run: launch to first LLM request {r['launch_to_first_request']:.2f} s, "
        f"shutdown {r['shutdown']:.2f} s (exit code {r['returncode']:.0f}); {load()}"
    )


HEADER = (
    "| W | LLM | eval | N | occupancy | wall / ideal | children of the initial program: measured / fewest at "
    "full occupancy / first wave | most children of one parent | best score after every W commits | novelty "
    "rejected (repeats of a value run) |"
)


def row(slots: int, latency: float, eval_seconds: float, candidates: int, jitter: float) -> str:
    """One setting. The ideal wall is one LLM latency (nothing can be evaluated before the first proposal
    comes back) plus N x eval / W. Children of the initial program: measured, the fewest a run that keeps
    every slot busy can have with these times (`initial_children`), and the first wave (one per slot)."""
    from kubevolve.loop.pacing import initial_children

    r = run_setting(slots, latency, eval_seconds, candidates, jitter)
    ideal = latency + (r.candidates - 1) * eval_seconds / slots
    bound = initial_children(slots, latency, eval_seconds, r.candidates - 1)
    return (
        f"| {slots} | {latency:g} s | {eval_seconds:g} s | {r.candidates} | {r.occupancy:.3f} | "
        f"{r.wall:.1f} / {ideal:.1f} s ({r.wall / ideal - 1:+.0%}) | {r.seed_children} / {bound} / {slots} | "
        f"{r.most_children} | {' → '.join(f'{b:.0f}' for b in r.best_by_wave)} | "
        f"{r.rejected / max(1, r.candidates - 1):.1%} ({r.repeats}) |"
    )


def print_grid(eval_seconds: float, jitter: float, waves: int) -> None:
    print(f"\n{load()}; evaluation {eval_seconds:g} s ± {jitter:.0%}\n\n{HEADER}\n" + "|---" * 10 + "|")
    for slots in (2, 4, 8, 16):
        for ratio in (0.0, 0.5, 1.0, 2.0):
            print(row(slots, ratio * eval_seconds, eval_seconds, 1 + waves * slots, jitter), flush=True)


def print_issue(jitter: float) -> None:
    print(f"\n{load()}; evaluation ± {jitter:.0%}\n\n{HEADER}\n" + "|---" * 10 + "|")
    print(row(16, 1.0, 4.0, 64, jitter), flush=True)
    print(row(8, 4.0, 2.0, 48, jitter), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "what", nargs="?", default="all", choices=["overhead", "startup", "grid", "issue", "all"]
    )
    parser.add_argument("--eval", type=float, default=1.0, help="evaluation seconds in the grid")
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="evaluation time spread, e.g. 0.2 for ±20%%"
    )
    parser.add_argument("--waves", type=int, default=4, help="candidates per slot in the grid")
    parser.add_argument("--candidates", type=int, default=100, help="candidates of the overhead run")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.what in ("startup", "all"):
        print_startup()
    if args.what in ("overhead", "all"):
        print_overhead(args.candidates)
    if args.what in ("grid", "all"):
        print_grid(args.eval, args.jitter, args.waves)
    if args.what in ("issue", "all"):
        print_issue(args.jitter)


if __name__ == "__main__":
    main()
