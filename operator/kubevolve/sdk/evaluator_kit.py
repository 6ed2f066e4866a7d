"""Helpers for a task's `evaluate.py`: what every evaluator does before it can judge a candidate, and how a
baseline (a task's `baselines/NAME.py`, which holds only its EVOLVE-BLOCK) becomes a program to run.

from kubevolve.sdk.evaluator_kit import load_program

def evaluate(program_path, stage):
    program = load_program(program_path, required=["solve"])
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType


def load_program(
    program_path: str | Path, *, required: Iterable[str] = (), defined: Iterable[str] = ()
) -> ModuleType:
    """Import the candidate program under a fresh module name, so two candidates evaluated by one worker never
    share module state, and leave nothing of it in `sys.modules`. A name in `required` that the program does
    not define (or not as a callable), or one in `defined` that it does not define at all (a task's
    requiredNames may be constants), is a ValueError naming it: a failed candidate with a clear reason."""
    name = f"_candidate_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, Path(program_path))
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {program_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it executes
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    for attribute in required:
        if not callable(getattr(module, attribute, None)):
            raise ValueError(f"the program defines no callable {attribute}")
    for attribute in defined:
        if not hasattr(module, attribute):
            raise ValueError(f"the program defines no {attribute}")
    return module


def program_with_block(
    task_dir: str | Path, block_path: str | Path, out_dir: str | Path | None = None
) -> Path:
    """Write the task's initial program with its evolve block replaced by the contents of `block_path`; return
    the written file (in `out_dir`, else a fresh temporary folder)."""
    from kubevolve.core.task import (
        load_task,  # only here: an evaluator that just loads programs need not import it
    )

    code = load_task(task_dir).with_block(Path(block_path).read_text())
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="kubevolve-baseline-"))
    path = folder / Path(block_path).name
    path.write_text(code)
    return path
