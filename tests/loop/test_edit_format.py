"""The Researcher's answer format: strict parsing with specific errors, and edits that never leave the
EVOLVE-BLOCK, for arbitrary text (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kubevolve.core.evolve_block import END, START, changed_outside_blocks, split
from kubevolve.loop.research.edit_format import Edit, EditError, apply_answer, apply_edits, parse_answer

PARENT = f"import a\n# {START}\nx = 1\ny = 2\nz = 3\n# {END}\nfrozen = x\n"


def render(motivation: str, edits: list[Edit]) -> str:
    body = "".join(f"<<<<<<< SEARCH\n{e.search}=======\n{e.replace}>>>>>>> REPLACE\n" for e in edits)
    return f"MOTIVATION: {motivation}\n\n{body}"


def test_parse_and_apply_a_diff():
    answer = parse_answer(render("make y bigger", [Edit("y = 2\n", "y = 20\n")]))
    assert answer.motivation == "make y bigger"
    assert apply_answer(PARENT, answer, START, END) == PARENT.replace("y = 2", "y = 20")


def test_rewrite_of_the_single_block_without_markers():
    answer = parse_answer("MOTIVATION: new block\n```python\nx = 5\n```\n")
    assert apply_answer(PARENT, answer, START, END) == PARENT.replace("x = 1\ny = 2\nz = 3\n", "x = 5\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no motivation here", "no 'MOTIVATION:' line"),
        ("MOTIVATION: x\n", "neither SEARCH/REPLACE edits nor a ```python code block"),
        ("MOTIVATION: x\n<<<<<<< SEARCH\nx = 1\n", "SEARCH block 1 is not closed"),
        (
            "MOTIVATION: x\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n",
            "SEARCH block 1 has no '>>>>>>> REPLACE' line",
        ),
        ("MOTIVATION: x\n<<<<<<< SEARCH\n=======\nx = 2\n>>>>>>> REPLACE\n", "SEARCH block 1 is empty"),
        ("MOTIVATION: x\n```python\na\n```\n```python\nb\n```\n", "2 code blocks"),
        ("MOTIVATION: x\n```python\na\n", "code block is not closed"),
    ],
)
def test_parse_errors_are_specific(text, message):
    with pytest.raises(EditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_answer(text)


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ([Edit("y = 2\n", "y = 3\n"), Edit("q = 9\n", "q = 1\n")], "SEARCH block 2 not found in parent"),
        ([Edit("= ", "== ")], "SEARCH block 1 matches 4 places in parent"),
        ([Edit("import a\n", "import b\n")], "SEARCH block 1 edits code outside the EVOLVE-BLOCK"),
        ([Edit(f"z = 3\n# {END}\n", "z = 4\n")], "SEARCH block 1 edits code outside the EVOLVE-BLOCK"),
        (
            [Edit("y = 2   \n", "y = 3\n")],
            "not found in parent (it would match with trailing whitespace ignored)",
        ),
    ],
)
def test_apply_errors_are_specific(edits, message):
    with pytest.raises(EditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_edits(PARENT, edits, START, END)


lines = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    ),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400))
def test_parser_never_crashes_on_arbitrary_text(text):
    try:
        answer = parse_answer(text)
    except EditError:
        return
    assert answer.motivation and (answer.edits or answer.rewrite is not None)


@settings(max_examples=200, deadline=None)
@given(
    block=st.lists(lines, min_size=1, max_size=8),
    start=st.integers(min_value=0, max_value=7),
    length=st.integers(min_value=1, max_value=4),
    replacement=st.lists(lines, max_size=4),
    motivation=st.text(alphabet="abc xyz", min_size=1, max_size=20).filter(str.strip),
)
def test_round_trip_edits_stay_inside_the_block(block, start, length, replacement, motivation):
    assume(all(START not in line and END not in line for line in block + replacement))
    parent = f"head = 0\n# {START}\n" + "".join(f"{line}\n" for line in block) + f"# {END}\ntail = 1\n"
    chosen = block[start % len(block) : start % len(block) + length]
    search = "".join(f"{line}\n" for line in chosen)
    edit = Edit(search, "".join(f"{line}\n" for line in replacement))
    assume(
        search.strip()
        and all(not line.startswith(("<<<<<", "=====", ">>>>>", "```")) for line in chosen + replacement)
    )
    assume(
        not any(x.lstrip().upper().startswith(("MOTIVATION", "**MOTIVATION")) for x in chosen + replacement)
    )
    answer = parse_answer(render(motivation, [edit]))
    assert answer.edits == (edit,)
    try:
        child = apply_answer(parent, answer, START, END)
    except EditError as err:
        inside = parent.index(f"# {START}\n") + len(f"# {START}\n"), parent.index(f"# {END}")
        at = parent.find(search)
        if "outside the EVOLVE-BLOCK" in str(err):  # e.g. a SEARCH that starts on the marker line's newline
            assert parent.count(search) == 1 and not (inside[0] <= at and at + len(search) <= inside[1])
        else:
            assert "matches" in str(err) and parent.count(search) > 1
        return
    assert changed_outside_blocks(parent, child) is None  # frozen parts are byte-identical
    assert split(child).blocks[0] == split(parent).blocks[0].replace(search, edit.replace, 1)
