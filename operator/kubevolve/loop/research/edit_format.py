"""The Researcher's answer format: a MOTIVATION line, then SEARCH/REPLACE edits or one full program.

Parsing is strict and every error names what is wrong ("SEARCH block 2 not found in parent"), because the
message goes back to the LLM on a debug retry and into the node's record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubevolve.core import evolve_block
from kubevolve.core.kinds import FailureKind
from kubevolve.loop.research.proposal import ProposalError

SEARCH = re.compile(r"^<{5,9} ?SEARCH\s*$")
DIVIDER = re.compile(r"^={5,9}\s*$")
REPLACE = re.compile(r"^>{5,9} ?REPLACE\s*$")
MOTIVATION = re.compile(r"^\s*\**MOTIVATION\**\s*:\s*(.*)$", re.IGNORECASE)
FENCE = re.compile(r"^```[\w+-]*\s*$")


class EditError(ProposalError):
    """The LLM's answer is not in the edit format, or its edits do not apply to the parent."""

    kind = FailureKind.MALFORMED_ANSWER


@dataclass(frozen=True)
class Edit:
    search: str
    replace: str


@dataclass(frozen=True)
class Answer:
    motivation: str
    edits: tuple[Edit, ...] = ()
    rewrite: str | None = None


def _motivation(lines: list[str]) -> str:
    for index, line in enumerate(lines):
        match = MOTIVATION.match(line)
        if match:
            text = [match.group(1).strip()]
            for follow in lines[index + 1 :]:
                if not follow.strip() or SEARCH.match(follow) or FENCE.match(follow):
                    break
                text.append(follow.strip())
            motivation = " ".join(t for t in text if t)
            if motivation:
                return motivation
    raise EditError("the answer has no 'MOTIVATION:' line saying what is changed and why")


def _edits(lines: list[str]) -> list[Edit]:
    edits: list[Edit] = []
    index = 0
    while index < len(lines):
        if not SEARCH.match(lines[index]):
            index += 1
            continue
        number = len(edits) + 1
        search: list[str] = []
        index += 1
        while index < len(lines) and not DIVIDER.match(lines[index]):
            if SEARCH.match(lines[index]) or REPLACE.match(lines[index]):
                raise EditError(f"SEARCH block {number} has no '=======' line before its end")
            search.append(lines[index])
            index += 1
        if index == len(lines):
            raise EditError(f"SEARCH block {number} is not closed: no '=======' line")
        replace: list[str] = []
        index += 1
        while index < len(lines) and not REPLACE.match(lines[index]):
            if SEARCH.match(lines[index]):
                raise EditError(f"SEARCH block {number} has no '>>>>>>> REPLACE' line")
            replace.append(lines[index])
            index += 1
        if index == len(lines):
            raise EditError(f"SEARCH block {number} has no '>>>>>>> REPLACE' line")
        index += 1
        if not "".join(search).strip():
            raise EditError(f"SEARCH block {number} is empty")
        edits.append(Edit("".join(search), "".join(replace)))
    return edits


def _code_blocks(lines: list[str]) -> list[str]:
    blocks: list[str] = []
    current: list[str] = []
    inside = False
    for line in lines:
        if FENCE.match(line):
            if inside:
                blocks.append("".join(current))
                current, inside = [], False
            else:
                inside = True
        elif inside:
            current.append(line)
    if inside:
        raise EditError("the answer's code block is not closed by ```")
    return blocks


def parse_answer(text: str) -> Answer:
    """Parse an LLM answer; raise EditError naming the first problem."""
    lines = text.splitlines(keepends=True)
    lines = [line if line.endswith("\n") else line + "\n" for line in lines]
    motivation = _motivation(lines)
    edits = _edits(lines)
    if edits:
        return Answer(motivation, tuple(edits))
    blocks = [b for b in _code_blocks(lines) if b.strip()]
    if len(blocks) == 1:
        return Answer(motivation, rewrite=blocks[0])
    if len(blocks) > 1:
        raise EditError(f"the answer has {len(blocks)} code blocks; a rewrite must be exactly one program")
    raise EditError("the answer has neither SEARCH/REPLACE edits nor a ```python code block with the program")


def _block_spans(code: str, start: str, end: str) -> list[tuple[int, int]]:
    split = evolve_block.split(code, start, end)
    spans, offset = [], 0
    for frozen, block in zip(split.frozen, split.blocks, strict=False):
        offset += len(frozen)
        spans.append((offset, offset + len(block)))
        offset += len(block)
    return spans


def apply_edits(parent: str, edits: tuple[Edit, ...] | list[Edit], start: str, end: str) -> str:
    """Apply edits in order; each SEARCH must match exactly once, inside an evolve block."""
    code = parent
    for number, edit in enumerate(edits, start=1):
        count = code.count(edit.search)
        if count == 0:
            stripped = "\n".join(line.rstrip() for line in edit.search.splitlines())
            hint = (
                " (it would match with trailing whitespace ignored)" if stripped and stripped in code else ""
            )
            raise EditError(f"SEARCH block {number} not found in parent{hint}")
        if count > 1:
            raise EditError(
                f"SEARCH block {number} matches {count} places in parent; include more lines to make it unique"
            )
        at = code.index(edit.search)
        if not any(a <= at and at + len(edit.search) <= b for a, b in _block_spans(code, start, end)):
            raise EditError(f"SEARCH block {number} edits code outside the EVOLVE-BLOCK")
        code = code[:at] + edit.replace + code[at + len(edit.search) :]
    return code


def apply_rewrite(parent: str, rewrite: str, start: str, end: str) -> str:
    """A whole program (kept as is; the static check compares its frozen parts), or, without markers, the new
    content of the parent's single evolve block."""
    if start in rewrite or end in rewrite:
        return rewrite
    split = evolve_block.split(parent, start, end)
    if len(split.blocks) != 1:
        raise EditError(
            f"the rewrite has no EVOLVE-BLOCK markers, and the program has {len(split.blocks)} evolve blocks"
        )
    return split.join([rewrite if rewrite.endswith("\n") else rewrite + "\n"])


def apply_answer(parent: str, answer: Answer, start: str, end: str) -> str:
    if answer.edits:
        return apply_edits(parent, answer.edits, start, end)
    assert answer.rewrite is not None
    return apply_rewrite(parent, answer.rewrite, start, end)
