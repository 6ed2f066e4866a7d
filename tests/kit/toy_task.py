"""A tiny task written to a folder: the toy problem most engine tests evolve."""

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


def write_task(
    root: Path,
    *,
    yaml_text: str | None = None,
    program: str = TOY_PROGRAM,
    evaluator: str = TOY_EVALUATOR,
    timeout: float = 5,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "task.yaml").write_text(
        yaml_text if yaml_text is not None else TOY_TASK_YAML.format(timeout=timeout)
    )
    (root / "initial.py").write_text(textwrap.dedent(program))
    (root / "evaluate.py").write_text(textwrap.dedent(evaluator))
    return root
