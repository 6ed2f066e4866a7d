"""Shared fixtures: a tiny task written to a temp folder, an isolated KUBEVOLVE_HOME, a SQLite store."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kubevolve.store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]

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


@pytest.fixture
def toy_task(tmp_path: Path) -> Path:
    return write_task(tmp_path / "toy")


@pytest.fixture(autouse=True)
def kubevolve_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "kvhome"
    monkeypatch.setenv("KUBEVOLVE_HOME", str(home))
    monkeypatch.delenv("KUBEVOLVE_STORE", raising=False)
    return home


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "store.db")
    yield s
    s.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Like the evaluation worker (one core per slot): many small ops on two contended OpenMP threads are
    several times slower than on one. Seeding switches on deterministic algorithms process-wide; the
    tests of other modules get the state they started with back. Torch is imported here, not at the top,
    so that test sessions without the task tests don't pay for it."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
