"""`load_program`, the first thing an evaluator does: a fresh module per candidate, nothing left behind, and a
missing entry point named."""

from __future__ import annotations

import sys

import pytest

from kubevolve.sdk.evaluator_kit import load_program, program_with_block


def test_each_load_is_a_fresh_module_left_out_of_sys_modules(tmp_path):
    program = tmp_path / "p.py"
    program.write_text(
        "import dataclasses\nCOUNT = []\n@dataclasses.dataclass\nclass P:\n    x: int = 1\ndef solve():\n    COUNT.append(1)\n    return len(COUNT)\n"
    )
    before = set(sys.modules)
    first, second = load_program(program, required=["solve"]), load_program(program)
    assert first.solve() == 1 and second.solve() == 1  # no state shared between candidates
    assert first.P().x == 1  # dataclasses found the module while it executed
    assert set(sys.modules) == before


def test_a_missing_or_uncallable_entry_point_is_named(tmp_path):
    program = tmp_path / "p.py"
    program.write_text("solve = 3\n")
    with pytest.raises(ValueError, match="defines no callable solve"):
        load_program(program, required=["solve"])
    with pytest.raises(ValueError, match="defines no callable curate"):
        load_program(program, required=["curate"])


def test_a_baseline_block_becomes_the_initial_program_with_that_block(toy_task, tmp_path):
    block = tmp_path / "baseline.py"
    block.write_text("def solve():\n    return 3.0, -1.0\n")
    (tmp_path / "out").mkdir()
    program = program_with_block(toy_task, block, tmp_path / "out")
    code = program.read_text()
    assert "return 3.0, -1.0" in code and "x = 0.5" not in code
    assert code.startswith("import math\n\n# EVOLVE-BLOCK-START\n") and code.endswith("# EVOLVE-BLOCK-END\n")
    assert load_program(program, required=["solve"]).solve() == (3.0, -1.0)
