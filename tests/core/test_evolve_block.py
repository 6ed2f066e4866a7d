from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubevolve.core.evolve_block import BlockError, changed_outside_blocks, split

PROGRAM = "import x\n# EVOLVE-BLOCK-START\na = 1\n# EVOLVE-BLOCK-END\nmid\n# EVOLVE-BLOCK-START\nb = 2\n# EVOLVE-BLOCK-END\ntail\n"


def test_split_and_join_round_trip():
    s = split(PROGRAM)
    assert s.blocks == ("a = 1\n", "b = 2\n")
    assert s.join() == PROGRAM
    assert s.join(["a = 3\n", "b = 4\n"]).count("a = 3") == 1


@given(st.lists(st.text(alphabet="abc =1\n", max_size=30), min_size=1, max_size=4))
def test_join_replaces_only_blocks(blocks):
    s = split(PROGRAM if len(blocks) == 2 else "# EVOLVE-BLOCK-START\nz\n# EVOLVE-BLOCK-END\n")
    new = [b if b.endswith("\n") or not b else b + "\n" for b in blocks[: len(s.blocks)]]
    if len(new) != len(s.blocks):
        with pytest.raises(BlockError):
            s.join(new)
        return
    joined = s.join(new)
    assert changed_outside_blocks(s.join(), joined) is None


def test_changes_outside_are_detected():
    assert changed_outside_blocks(PROGRAM, PROGRAM.replace("import x", "import y")) == (
        "code changed outside the evolve blocks (before the first evolve block)"
    )
    assert "after evolve block 1" in changed_outside_blocks(PROGRAM, PROGRAM.replace("mid", "MID"))
    broken = PROGRAM.replace("# EVOLVE-BLOCK-END\ntail", "tail")
    assert "markers broken" in changed_outside_blocks(PROGRAM, broken)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("x\n", "no evolve block"),
        ("# EVOLVE-BLOCK-END\n", "without a matching"),
        ("# EVOLVE-BLOCK-START\n# EVOLVE-BLOCK-START\n", "inside an open evolve block"),
    ],
)
def test_broken_markers(code, message):
    with pytest.raises(BlockError, match=message):
        split(code)
