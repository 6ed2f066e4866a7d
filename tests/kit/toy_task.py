"""A tiny task written to a folder: the toy problem most engine tests evolve.

By default it is judged: `run.py` calls the candidate's solve() in the sandbox and returns (x, y) as data, and
`evaluate.py` scores them in the trusted judge. A test that passes its own `evaluator` (a legacy
`evaluate(program_path, stage)`) gets a legacy task, without runner."""

from __future__ import annotations

import textwrap
from pathlib import Path

TOY_TASK_YAML = """\
name: toy
description: Maximise f(x, y) = -(x - 3)^2 - (y + 1)^2; the optimum is 0 at x = 3, y = -1.
metric: f
stages:
  quick:
    timeoutSeconds: {timeout}
    resources: {{memoryMb: 256, maxProcesses: 16, maxFileMb: 4}}
checks:
  forbiddenImports: [socket]
  requiredNames: [solve]
sampler: {{kind: greedy, numInspirations: 1}}
"""

TOY_PROGRAM = """\
import math

# EVOLVE-BLOCK-START
def solve():
    x = 0.5
    y = 0.5
    return x, y
# EVOLVE-BLOCK-END
"""

TOY_EVALUATOR = """\
import importlib.util


def evaluate(program_path, stage):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y = module.solve()
    return {"f": -(x - 3) ** 2 - (y + 1) ** 2, "x": x, "artifacts": {"point": f"({x}, {y})"}}
"""


TOY_RUNNER = """\
def run(program, request):
    x, y = program.solve()
    return {"x": x, "y": y}
"""

TOY_JUDGE = """\
def judge(candidate, stage):
    point = candidate.request({})
    x, y = float(point["x"]), float(point["y"])
    return {"f": -(x - 3) ** 2 - (y + 1) ** 2, "x": x, "artifacts": {"point": f"({x}, {y})"}}
"""


def write_task(
    root: Path,
    *,
    yaml_text: str | None = None,
    program: str = TOY_PROGRAM,
    evaluator: str | None = None,
    runner: str = TOY_RUNNER,
    timeout: float = 5,
) -> Path:
    """The toy task in `root`: judged (TOY_JUDGE with `runner`) unless a legacy `evaluator` is given."""
    root.mkdir(parents=True, exist_ok=True)
    text = yaml_text if yaml_text is not None else TOY_TASK_YAML.format(timeout=timeout)
    if evaluator is None:
        evaluator = TOY_JUDGE
        (root / "run.py").write_text(textwrap.dedent(runner))
        if "\nrunner:" not in "\n" + text:
            text += "runner: run.py\n"
    (root / "task.yaml").write_text(text)
    (root / "initial.py").write_text(textwrap.dedent(program))
    (root / "evaluate.py").write_text(textwrap.dedent(evaluator))
    return root
