"""Ablation of the loop's plumbing: does each component reach the prompt when it should?

A real local run (a toy task, f(x, y, z) = -(x - 3)^2 - (y + 1)^2 - (z - 2)^2, the sandboxed evaluator, MiniLM retrieval,
the SQLite store) against a scripted OpenAI-protocol server whose answers depend only on what each prompt
contains, so every effect below is caused by what kubevolve put into a prompt:

- the Researcher proposes the edit a cognition entry describes (set x to 3, set y to -1, set z to 2) only when
  that entry is in its prompt and the current program does not have it yet; otherwise it nudges x blindly;
  every fifth proposal imports a forbidden module (an idea the static check rejects);
- the Analyzer answers with a lesson token (LESSON-n) and a NEXT line that names the first coordinate the
  candidate still has wrong: the text the next prompts' retrieval queries are made of;
- the LLM judge (in its row) rejects a blind nudge when one of the neighbours it is shown was one already.

Each row turns one component off (or on). The columns count what reached the prompts and what came of it.
This measures the plumbing (what the engine puts where), not the science: the scripted model is not a
researcher, and no row says anything about how well a real LLM would use what it is shown.

    python benchmarks/ablation.py [--candidates 16] [--rows ...] [--dump DIR]   # DIR: a prompt of each kind
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "kit"))  # the tests' OpenAI-protocol server
from openai_server import OpenAIServer, Reply  # noqa: E402

from kubevolve.core.models import Stage  # noqa: E402
from kubevolve.core.spec import RunSpec  # noqa: E402
from kubevolve.core.task import load_task  # noqa: E402
from kubevolve.loop.agents import make_agents  # noqa: E402
from kubevolve.runtime.local import Evolution  # noqa: E402
from kubevolve.store.sqlite import SQLiteStore  # noqa: E402

TASK_YAML = """\
name: ablation
description: >
  Maximise f(x, y, z) = -(x - 3)^2 - (y + 1)^2 - (z - 2)^2 by editing the numbers solve() returns. Only the
  evolve block may change, and the program must not use the network.
metric: f
stages:
  quick:
    timeoutSeconds: 10
    resources: {memoryMb: 256, maxProcesses: 16, maxFileMb: 4}
checks:
  forbiddenImports: [socket]
  requiredNames: [solve]
sampler: {kind: greedy, numInspirations: 1}
"""
PROGRAM = """\
# EVOLVE-BLOCK-START
def solve():
    x = 0.5
    y = 0.5
    z = 0.5
    return x, y, z
# EVOLVE-BLOCK-END
"""
EVALUATOR = """\
import importlib.util


def evaluate(program_path, stage):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y, z = module.solve()
    return {"f": -(x - 3) ** 2 - (y + 1) ** 2 - (z - 2) ** 2, "x": x, "y": y, "z": z}
"""
# Each entry's edit: (the coordinate, the value it sets). The distractors describe no edit.
OPTIMUM = {"x": 3.0, "y": -1.0, "z": 2.0}
EDITS = {
    "Set x to its optimum 3": "x",
    "x = 3 maximises the first term": "x",  # a near-copy of the first: MMR's business
    "Set y to its optimum -1": "y",
    "Set z to its optimum 2": "z",
}
COGNITION = """\
## Set x to its optimum 3
The first term of f, -(x - 3)^2, is largest at x = 3: set x = 3.0 in solve() and that term vanishes.
Source: elementary calculus (the vertex of a parabola)

## x = 3 maximises the first term
Because -(x - 3)^2 peaks at x = 3, setting x = 3.0 in solve() maximises the first term of f.
Source: elementary calculus (the vertex of a parabola), reworded

## Set y to its optimum -1
The second term of f, -(y + 1)^2, is largest at y = -1: set y = -1.0 in solve() to remove it.
Source: elementary calculus (the vertex of a parabola)

## Set z to its optimum 2
The third term of f, -(z - 2)^2, is largest at z = 2: set z = 2.0 in solve() to remove it.
Source: elementary calculus (the vertex of a parabola)

## Caching repeated computations
Memoise a pure function whose arguments repeat, so each distinct call is computed once.
Source: folklore (dynamic programming)

## Vectorise loops with numpy
Replace Python loops over arrays by whole-array numpy operations.
Source: numpy documentation

## Random restarts escape local optima
Restart a local search from several random points and keep the best result.
Source: folklore (global optimisation)

## Learning-rate warm-up stabilises early training
Ramp the learning rate up over the first steps of training before decaying it.
Source: Goyal et al. 2017, arXiv:1706.02677
"""


def write_task(root: Path) -> Path:
    (root / "cognition").mkdir(parents=True, exist_ok=True)
    (root / "task.yaml").write_text(TASK_YAML)
    (root / "initial.py").write_text(PROGRAM)
    (root / "evaluate.py").write_text(EVALUATOR)
    (root / "cognition" / "priors.md").write_text(COGNITION)
    return root


def current_values(prompt: str, heading: str = "# Current program") -> dict[str, float]:
    """x, y and z of the program under `heading`, as the prompt shows it."""
    block = prompt.split(heading, 1)[1]
    return {
        name: float(m.group(1)) for name in OPTIMUM if (m := re.search(rf"^    {name} = (\S+)", block, re.M))
    }


class ScriptedModel:
    """Answers each role from its prompt alone, and keeps what it saw."""

    def __init__(self) -> None:
        self.prompts: dict[str, list[str]] = {"researcher": [], "analyzer": [], "judge": []}
        self.from_cognition = 0
        self.proposals = 0

    def __call__(self, body: dict[str, Any], index: int) -> Reply:
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        if system.startswith("You are the judge"):
            self.prompts["judge"].append(user)
            return Reply(self.judge(user))
        if system.startswith("You are the Analyzer"):
            self.prompts["analyzer"].append(user)
            return Reply(self.analyse(user, len(self.prompts["analyzer"])))
        self.prompts["researcher"].append(user)
        return Reply(self.propose(user))

    def propose(self, prompt: str) -> str:
        self.proposals += 1
        values = current_values(prompt)
        if self.proposals % 5 == 0:
            return (
                "MOTIVATION: read the optimum from a server.\n<<<<<<< SEARCH\ndef solve():\n=======\n"
                "def solve():\n    import socket\n>>>>>>> REPLACE\n"
            )
        knowledge = (
            prompt.split("# Relevant knowledge (human priors)", 1)[1]
            if "# Relevant knowledge" in prompt
            else ""
        )
        for title, name in EDITS.items():
            if title in knowledge and values.get(name) != OPTIMUM[name]:
                self.from_cognition += 1
                return self.edit(name, values[name], OPTIMUM[name], f"apply '{title}' from the priors")
        step = 0.1 * (self.proposals % 4 + 1)
        return self.edit("x", values["x"], round(values["x"] + step, 3), f"blind nudge: x up by {step:.1f}")

    @staticmethod
    def edit(name: str, old: float, new: float, why: str) -> str:
        return f"MOTIVATION: {why}.\n<<<<<<< SEARCH\n    {name} = {old}\n=======\n    {name} = {new}\n>>>>>>> REPLACE\n"

    @staticmethod
    def analyse(prompt: str, n: int) -> str:
        """A lesson whose NEXT names the first coordinate the candidate still has wrong: the next query."""
        values = current_values(prompt, "## The candidate's evolve block")
        todo = [name for name, value in OPTIMUM.items() if values.get(name) != value]
        next_step = f"set {todo[0]} to its optimum {OPTIMUM[todo[0]]:g}" if todo else "nothing left to fix"
        return (
            f"WHAT CHANGED: see the motivation (LESSON-{n}).\nOBSERVED EFFECT: f moved.\n"
            f"LIKELY CAUSE: f is a sum of three parabolas.\nNEXT: {next_step}."
        )

    @staticmethod
    def judge(prompt: str) -> str:
        motivation = prompt.split("# The candidate\nMotivation: ", 1)[1].split("\n", 1)[0]
        neighbours = prompt.split("# Its nearest neighbours", 1)[1]
        if motivation.startswith("blind nudge") and "Motivation: blind nudge" in neighbours:
            return "VERDICT: REJECT\nREASON: a neighbour was a blind nudge of x already."
        return "VERDICT: PASS\nREASON: new."


ROWS: dict[str, dict[str, Any]] = {
    "full (defaults)": {},
    "retrieval off": {"retrieval": {"cognitionTopK": 0, "insightsTopK": 0}},
    "analyzer off": {"analyzer": {"mode": "off"}},
    "analyzer offline": {"analyzer": {"mode": "offline"}},
    "MMR off (lambda 1)": {"retrieval": {"mmrLambda": 1.0}},
    "+ LLM judge": {"llmJudge": {"enabled": True}},
}


async def one_run(root: Path, url: str, name: str, fields: dict[str, Any], candidates: int) -> dict[str, Any]:
    task_dir = write_task(root / "task")
    store = SQLiteStore(root / f"{name}.db")
    spec = RunSpec(
        task=str(task_dir),
        name="ablation",
        llm={"endpoint": url, "model": "scripted"},
        engineer={"debugRetries": 0},
        retrieval={"cognitionTopK": 2, **fields.pop("retrieval", {})},
        budget={"maxCandidates": candidates},
        parallelism={"evaluators": 1, "proposers": 1, "proposalsAhead": 0},
        **fields,
    )
    agents = make_agents(spec)
    started = time.monotonic()
    try:
        evolution = Evolution.of_agents(
            spec,
            load_task(task_dir),
            store,
            agents,
            root / "work",
        )
        await evolution.run()
    finally:
        await agents.close()
    nodes = store.list_nodes("ablation")
    entries = {e.id: e.title for e in store.list_cognition("ablation")}
    store.close()
    return {"nodes": nodes, "entries": entries, "seconds": time.monotonic() - started}


NEXT = re.compile(r"^What to try next: set ([xyz]) ", re.M)


def follows_an_analysis(prompt: str, titles: tuple[str, ...]) -> bool | None:
    """Whether the first entry retrieved into the prompt is about a coordinate that an analysis in the prompt
    (the parent's or an inspiration's) says to fix next; None when no analysis in it names one."""
    named = set(NEXT.findall(prompt.split("# Relevant knowledge", 1)[0]))
    if not named:
        return None
    return bool(titles) and EDITS.get(titles[0]) in named


def measure(model: ScriptedModel, run: dict[str, Any]) -> dict[str, Any]:
    nodes, prompts = run["nodes"], model.prompts["researcher"]
    proposed = [n for n in nodes if n.parent_ids]  # in the order of the prompts (proposals are sequential)
    cognition = [tuple(run["entries"].get(i, i) for i in n.retrieved.get("cognition", [])) for n in proposed]
    followed = [
        f for p, t in zip(prompts, cognition, strict=True) if (f := follows_an_analysis(p, t)) is not None
    ]
    rejected = [
        n for n in nodes if n.stage in (Stage.REJECTED_STATIC, Stage.REJECTED_NOVELTY) and n.motivation
    ]
    best = max((n.score for n in nodes if n.score is not None), default=None)
    return {
        "prompts": len(prompts),
        "with cognition": sum(1 for t in cognition if t),
        "distinct cognition sets": len({frozenset(t) for t in cognition if t}),
        "top entry follows an analysis": f"{sum(followed)} / {len(followed)}" if followed else "—",
        "both x entries": sum(
            1 for t in cognition if {"Set x to its optimum 3", "x = 3 maximises the first term"} <= set(t)
        ),
        "edits from cognition": model.from_cognition,
        "with insights": sum(1 for p in prompts if "# Lessons from earlier experiments" in p),
        "analyses per prompt": sum(p.count("What changed:") for p in prompts) / max(len(prompts), 1),
        "rejected ideas analysed": f"{sum(1 for n in rejected if n.insight_id)} / {len(rejected)}",
        "with a refusal lesson": sum(1 for p in prompts if "It was rejected before evaluation" in p),
        "judge rejections": sum(1 for n in nodes if n.judge.get("verdict") == "reject"),
        "best f": "—" if best is None else f"{best:.4g}",
        "seconds": f"{run['seconds']:.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    parser.add_argument(
        "--dump", type=Path, help="write one prompt of each kind here (as sent, user message)"
    )
    args = parser.parse_args()
    results: list[tuple[str, dict[str, Any]]] = []
    for number, name in enumerate(args.rows.split(",")):
        model = ScriptedModel()
        with OpenAIServer(model) as server, tempfile.TemporaryDirectory(prefix="kubevolve-ablation-") as tmp:
            run = asyncio.run(
                one_run(Path(tmp), server.url, f"row{number}", dict(ROWS[name]), args.candidates)
            )
        results.append((name, measure(model, run)))
        if args.dump:  # the last prompt of each kind from the first row that has one: the most history in it
            args.dump.mkdir(parents=True, exist_ok=True)
            for kind, prompts in model.prompts.items():
                if prompts and not (args.dump / f"{kind}.md").exists():
                    (args.dump / f"{kind}.md").write_text(prompts[-1])
    table = Table(title=f"ablation: what reaches the prompts ({args.candidates} candidates per row)")
    columns = list(results[0][1])
    table.add_column("row")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in results:
        table.add_row(name, *(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    print("\n| row | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for name, row in results:
        print(
            f"| {name} | "
            + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values())
            + " |"
        )
    print(json.dumps({name: row for name, row in results}, indent=1))


if __name__ == "__main__":
    main()
