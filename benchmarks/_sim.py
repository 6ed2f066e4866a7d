"""Shared pieces of the engine benchmarks: a generated task with a simulated evaluation, a simulated proposer."""

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
description: A benchmark task whose candidates sleep a fixed time.
metric: score
runner: run.py
stages:
  quick: {{timeoutSeconds: 60, resources: {{memoryMb: 512}}}}
checks: {{requiredNames: [VALUE]}}
sampler: {{kind: {sampler}}}
"""
PROGRAM = "# EVOLVE-BLOCK-START\nVALUE = 0\n# EVOLVE-BLOCK-END\n"
# the evaluation time is spent on the candidate's side, in its sandboxed process; the judge only scores
RUNNER = """\
import time


def run(program, request):
    time.sleep({seconds})
    return {{"value": program.VALUE}}
"""
JUDGE = """\
def judge(candidate, stage):
    value = int(candidate.request({{}})["value"])
    return {{"score": float(value % 1000)}}
"""


def simulated_task(eval_seconds: float, sampler: str = "random") -> Task:
    """A judged task (the engine's boundary is part of what the benchmarks measure) that sleeps
    `eval_seconds` per evaluation in the candidate's process."""
    root = Path(tempfile.mkdtemp(prefix="kubevolve-bench-"))
    (root / "task.yaml").write_text(TASK_YAML.format(sampler=sampler))
    (root / "initial.py").write_text(PROGRAM)
    (root / "run.py").write_text(RUNNER.format(seconds=eval_seconds))
    (root / "evaluate.py").write_text(JUDGE.format())
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
