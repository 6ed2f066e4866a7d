"""Shared pieces of the engine benchmarks: a generated task with a simulated evaluator, a simulated proposer."""

from __future__ import annotations

import asyncio
import itertools
import re
import tempfile
from pathlib import Path

from kubevolve.core.task import Task, load_task
from kubevolve.loop.research.proposal import Proposal, ProposalRequest

TASK_YAML = """\
name: simulated
description: A benchmark task whose evaluator sleeps a fixed time.
metric: score
stages:
  quick: {{timeoutSeconds: 60, resources: {{memoryMb: 512}}}}
checks: {{requiredNames: [VALUE]}}
sampler: {{kind: {sampler}}}
"""
PROGRAM = "# EVOLVE-BLOCK-START\nVALUE = 0\n# EVOLVE-BLOCK-END\n"
EVALUATOR = """\
import time


def evaluate(program_path, stage):
    time.sleep({seconds})
    value = int(open(program_path).read().split("VALUE = ")[1].split()[0])
    return {{"score": float(value % 1000)}}
"""


def simulated_task(eval_seconds: float, sampler: str = "random") -> Task:
    root = Path(tempfile.mkdtemp(prefix="kubevolve-bench-"))
    (root / "task.yaml").write_text(TASK_YAML.format(sampler=sampler))
    (root / "initial.py").write_text(PROGRAM)
    (root / "evaluate.py").write_text(EVALUATOR.format(seconds=eval_seconds))
    return load_task(root)


class SimulatedProposer:
    """Waits `latency` seconds (an LLM call), then returns the parent with a fresh value: always novel."""

    name = "simulated"

    def __init__(self, latency: float):
        self.latency = latency
        self.counter = itertools.count(1)

    async def propose(self, request: ProposalRequest) -> Proposal:
        if self.latency:
            await asyncio.sleep(self.latency)
        code = re.sub(r"VALUE = \d+", f"VALUE = {next(self.counter)}", request.parents[0].code)
        return Proposal(code=code, motivation="simulated", proposer=self.name)
