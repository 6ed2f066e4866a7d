"""The offline proposer: program-search operators on the EVOLVE-BLOCK's numbers, no LLM.

It is the embedded default when no LLM endpoint is configured, so a run works anywhere, and it is honest about
being weak: it never invents code, it only tunes what the program already says. Three operators, chosen by a
`random.Random(request.seed)` so that the same request always gives the same proposal:

- perturb: change 1..3 numeric literals (gaussian relative noise at one of a few scales; integers by +-1 or a
  small step; a literal keeps its kind and, being unsigned in Python, its sign);
- small step: change one literal very finely;
- crossover: take numeric literal values from an inspiration at aligned positions (lines whose code is the same
  apart from the numbers), or, when the inspiration's block has different code but the same number of lines,
  take whole lines from it (uniform line crossover).

Literals are found with `tokenize` (NUMBER tokens), so numbers inside strings and comments are never touched,
and every edit stays inside the evolve blocks: the frozen parts are re-joined byte for byte.
"""

from __future__ import annotations

import ast
import difflib
import io
import math
import random
import tokenize
from dataclasses import dataclass

from kubevolve.core import pysource
from kubevolve.core.evolve_block import BlockError, Split
from kubevolve.loop.research.proposal import Proposal, ProposalError, ProposalRequest

PERTURB_SCALES = (0.01, 0.05, 0.2)  # relative standard deviations of a float perturbation
SMALL_STEP_SCALE = 0.002
MAX_PERTURBED = 3
MAX_ATTEMPTS = 20  # proposals tried before giving up (each must differ from the parent and parse)
STRUCTURAL_KEYWORDS = {"axis", "axes", "ndim", "dtype"}  # integer arguments that are not quantities to tune


@dataclass(frozen=True)
class NumericLiteral:
    """A decimal int or float literal inside an evolve block."""

    block: int  # index of the evolve block
    start: int  # character offsets within that block's text
    end: int
    line: int  # line number in the whole program (1-based)
    block_line: int  # line index within the block (0-based)
    text: str
    value: int | float
    structural: bool  # an index or an axis: changing it usually breaks the program, so perturb avoids it

    @property
    def is_int(self) -> bool:
        return isinstance(self.value, int)


@dataclass(frozen=True)
class Edit:
    literal: NumericLiteral
    new_text: str


class OfflineProposer:
    """Proposes a child by tuning the parent's EVOLVE-BLOCK numbers or crossing it with an inspiration.

    It cannot read an earlier attempt's error (`request.feedback`): a debug retry simply gets another proposal.
    """

    name = "offline"
    accepts_feedback = False

    async def propose(self, request: ProposalRequest) -> Proposal:
        return propose_offline(request)


def propose_offline(request: ProposalRequest) -> Proposal:
    """Synchronous core of OfflineProposer.propose (the operators do no I/O)."""
    if not request.parents:
        raise ProposalError("offline proposer: the request has no parent")
    parent = request.parents[0].code
    split = _split(request, parent, "the parent")
    literals = find_literals(parent, split)
    donors = _donors(request, split)
    if not literals and not donors:
        raise ProposalError(
            "offline proposer: the parent's evolve blocks contain no numeric literals and no inspiration "
            "differs from the parent, so there is nothing to perturb or cross over"
        )
    known = {parent, *(donor.join() for _, donor in donors)}  # a copy of a known program teaches nothing
    rng = random.Random(request.seed)
    failures: list[str] = []
    for _ in range(MAX_ATTEMPTS):
        result = _one_attempt(rng, split, literals, donors)
        if result is None:
            failures.append("no change")
            continue
        blocks, motivation = result
        code = split.join(blocks)
        if code in known:
            failures.append("no change" if code == parent else "copy of an inspiration")
            continue
        try:
            pysource.parse(code)
        except SyntaxError as err:
            failures.append(f"did not parse ({err.msg})")
            continue
        return Proposal(
            code=code, motivation="offline proposer: " + motivation, proposer=OfflineProposer.name
        )
    raise ProposalError(
        f"offline proposer: no usable change in {MAX_ATTEMPTS} attempts ({', '.join(sorted(set(failures)))})"
    )


def _split(request: ProposalRequest, code: str, what: str) -> Split:
    try:
        return request.task.split(code)
    except BlockError as err:
        raise ProposalError(f"offline proposer: {what} has no usable evolve blocks: {err}") from None


def _donors(request: ProposalRequest, split: Split) -> list[tuple[str, Split]]:
    """Programs to cross over with, labelled for the motivation: further parents and inspirations whose
    blocks differ from the parent's (same number of blocks)."""
    labelled = [("parent", n) for n in request.parents[1:]] + [
        ("inspiration", n) for n in request.inspirations
    ]
    donors = []
    for role, node in labelled:
        try:
            other = request.task.split(node.code)
        except BlockError:
            continue
        if len(other.blocks) == len(split.blocks) and other.blocks != split.blocks:
            donors.append((f"{role} {node.id[:8]}", other))
    return donors


def _one_attempt(
    rng: random.Random, split: Split, literals: list[NumericLiteral], donors: list[tuple[str, Split]]
) -> tuple[list[str], str] | None:
    tunable = [lit for lit in literals if not lit.structural] or literals
    roll = rng.random()
    if donors and (roll < 0.3 or not tunable):
        donor_label, donor = rng.choice(donors)
        return crossover(rng, split, literals, donor, donor_label)
    if roll < 0.5:
        return small_step(rng, split, tunable)
    return perturb(rng, split, tunable)


def perturb(rng: random.Random, split: Split, literals: list[NumericLiteral]) -> tuple[list[str], str] | None:
    count = min(len(literals), rng.choices(range(1, MAX_PERTURBED + 1), weights=(5, 3, 2))[0])
    scale = rng.choice(PERTURB_SCALES)
    edits = []
    for literal in rng.sample(literals, count):
        new_text = perturbed_text(literal, scale, rng)
        if new_text is not None:
            edits.append(Edit(literal, new_text))
    if not edits:
        return None
    noun = "literal" if len(edits) == 1 else "literals"
    return apply_edits(split, edits), (
        f"perturbed {len(edits)} numeric {noun} (gaussian relative scale {scale}){_where(edits)}"
    )


def small_step(
    rng: random.Random, split: Split, literals: list[NumericLiteral]
) -> tuple[list[str], str] | None:
    literal = rng.choice(literals)
    new_text = perturbed_text(literal, SMALL_STEP_SCALE, rng, int_step=1)
    if new_text is None:
        return None
    edits = [Edit(literal, new_text)]
    motivation = f"small step on 1 numeric literal (relative scale {SMALL_STEP_SCALE}){_where(edits)}"
    return apply_edits(split, edits), motivation


def crossover(
    rng: random.Random, split: Split, literals: list[NumericLiteral], donor: Split, donor_label: str
) -> tuple[list[str], str] | None:
    """Take literal values from the donor where lines align; sometimes (or when none align) whole lines."""
    pairs = aligned_literals(split, literals, donor)
    if not pairs or rng.random() < 0.2:
        swapped = line_crossover(rng, split, donor, donor_label)
        if swapped is not None or not pairs:
            return swapped
    chosen = [pair for pair in pairs if rng.random() < 0.5] or [rng.choice(pairs)]
    edits = [Edit(mine, theirs.text) for mine, theirs in chosen]
    noun = "value" if len(edits) == 1 else "values"
    return apply_edits(split, edits), (
        f"crossover with {donor_label}: took {len(edits)} numeric literal {noun} "
        f"at aligned positions{_where(edits)}"
    )


def line_crossover(
    rng: random.Random, split: Split, donor: Split, donor_label: str
) -> tuple[list[str], str] | None:
    """Uniform crossover of whole lines between blocks of equal length whose lines differ."""
    blocks = list(split.blocks)
    candidates = []
    for index, (mine, theirs) in enumerate(zip(split.blocks, donor.blocks, strict=True)):
        my_lines, their_lines = mine.splitlines(keepends=True), theirs.splitlines(keepends=True)
        if len(my_lines) != len(their_lines):
            continue
        differing = [i for i, (a, b) in enumerate(zip(my_lines, their_lines, strict=True)) if a != b]
        if differing:
            candidates.append((index, my_lines, their_lines, differing))
    if not candidates:
        return None
    index, my_lines, their_lines, differing = rng.choice(candidates)
    taken = [i for i in differing if rng.random() < 0.5] or [rng.choice(differing)]
    blocks[index] = "".join(their_lines[i] if i in taken else line for i, line in enumerate(my_lines))
    first = _first_line(split, index)
    lines = ", ".join(str(first + i) for i in taken)
    noun = "line" if len(taken) == 1 else "lines"
    return (
        blocks,
        f"line crossover with {donor_label}: took {noun} {lines} of evolve block {index + 1} from it",
    )


def aligned_literals(
    split: Split, literals: list[NumericLiteral], donor: Split
) -> list[tuple[NumericLiteral, NumericLiteral]]:
    """(parent literal, donor literal) pairs at the same place on lines that match apart from their numbers,
    whose values differ."""
    donor_literals = find_literals(donor.join(), donor)
    pairs = []
    for index in range(len(split.blocks)):
        mine = _by_line(literals, index)
        theirs = _by_line(donor_literals, index)
        my_skeleton = _skeleton(split.blocks[index], mine)
        their_skeleton = _skeleton(donor.blocks[index], theirs)
        matcher = difflib.SequenceMatcher(None, my_skeleton, their_skeleton, autojunk=False)
        for match in matcher.get_matching_blocks():
            for k in range(match.size):
                row = list(zip(mine.get(match.a + k, []), theirs.get(match.b + k, []), strict=True))
                pairs += [(a, b) for a, b in row if a.value != b.value or type(a.value) is not type(b.value)]
    return pairs


def _by_line(literals: list[NumericLiteral], block: int) -> dict[int, list[NumericLiteral]]:
    rows: dict[int, list[NumericLiteral]] = {}
    for literal in literals:
        if literal.block == block:
            rows.setdefault(literal.block_line, []).append(literal)
    return rows


def _skeleton(block: str, rows: dict[int, list[NumericLiteral]]) -> list[str]:
    """The block's lines with every numeric literal replaced by a placeholder."""
    lines = block.split("\n")
    offset = 0
    out = []
    for number, line in enumerate(lines):
        pieces, cursor = [], 0
        for literal in rows.get(number, []):
            pieces += [line[cursor : literal.start - offset], "\0"]
            cursor = literal.end - offset
        out.append("".join(pieces) + line[cursor:])
        offset += len(line) + 1
    return out


def perturbed_text(
    literal: NumericLiteral, scale: float, rng: random.Random, int_step: int | None = None
) -> str | None:
    """A new literal text of the same kind and sign, or None when the perturbation changed nothing."""
    if literal.is_int:
        count = int(literal.value)
        step = int_step or (
            1 if rng.random() < 0.7 else max(1, round(abs(count) * scale * abs(rng.gauss(0, 1))))
        )
        new_int = count + rng.choice((-1, 1)) * step
        new_int = max(new_int, 1 if count >= 1 else 0)  # a positive count stays positive
        return None if new_int == count else str(new_int)
    value = float(literal.value)
    if value == 0.0:
        new = abs(rng.gauss(0.0, scale * 0.1))
    else:
        new = abs(value * (1.0 + scale * rng.gauss(0.0, 1.0)))
    if not math.isfinite(new):
        return None
    digits = max(3, math.ceil(-math.log10(scale)) + 3)
    text = format_float(new, digits)
    return None if float(text) == value else text


def format_float(value: float, digits: int) -> str:
    text = f"{value:.{digits}g}"
    return text if any(c in text for c in ".eE") else text + ".0"


def apply_edits(split: Split, edits: list[Edit]) -> list[str]:
    blocks = list(split.blocks)
    for edit in sorted(edits, key=lambda e: (e.literal.block, -e.literal.start)):
        lit = edit.literal
        text = blocks[lit.block]
        blocks[lit.block] = text[: lit.start] + edit.new_text + text[lit.end :]
    return blocks


def _where(edits: list[Edit]) -> str:
    by_block: dict[int, list[str]] = {}
    for edit in sorted(edits, key=lambda e: (e.literal.block, e.literal.start)):
        lit = edit.literal
        by_block.setdefault(lit.block, []).append(f"line {lit.line} {lit.text} -> {edit.new_text}")
    return "".join(
        f" in evolve block {block + 1}: " + ", ".join(changes) for block, changes in by_block.items()
    )


def _first_line(split: Split, block: int) -> int:
    """The program line number of the first line of evolve block `block`."""
    before = split.frozen[0] + "".join(
        b + f for b, f in zip(split.blocks[:block], split.frozen[1 : block + 1], strict=True)
    )
    return before.count("\n") + 1


def find_literals(code: str, split: Split) -> list[NumericLiteral]:
    """Every decimal int/float NUMBER token inside the evolve blocks of `code` (which `split` cuts)."""
    spans, cursor = [], len(split.frozen[0])
    for block_text, frozen in zip(split.blocks, split.frozen[1:], strict=True):
        spans.append((cursor, cursor + len(block_text)))
        cursor += len(block_text) + len(frozen)
    line_starts = [0]
    for line in io.StringIO(code).readlines():
        line_starts.append(line_starts[-1] + len(line))
    structural = _structural_positions(code)
    literals = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError) as err:
        raise ProposalError(f"offline proposer: the program cannot be tokenized: {err}") from None
    for token in tokens:
        if token.type != tokenize.NUMBER:
            continue
        value = _decimal_value(token.string)
        if value is None:
            continue
        row, col = token.start
        offset = line_starts[row - 1] + col
        for block, (begin, end) in enumerate(spans):
            if begin <= offset < end:
                start = offset - begin
                line_text = code[line_starts[row - 1] : line_starts[row]] if row < len(line_starts) else ""
                byte_col = len(line_text[:col].encode())
                literals.append(
                    NumericLiteral(
                        block=block,
                        start=start,
                        end=start + len(token.string),
                        line=row,
                        block_line=split.blocks[block].count("\n", 0, start),
                        text=token.string,
                        value=value,
                        structural=(row, byte_col) in structural,
                    )
                )
    return literals


def _decimal_value(text: str) -> int | float | None:
    """The value of a decimal int or float literal; None for complex, hex, octal and binary literals."""
    lowered = text.lower()
    if lowered.endswith("j") or lowered.startswith(("0x", "0o", "0b")):
        return None
    clean = text.replace("_", "")
    if any(c in lowered for c in ".e"):
        return float(clean)
    return int(clean)


def _structural_positions(code: str) -> set[tuple[int, int]]:
    """(line, byte column) of int constants used as subscript indices or axis-like keyword arguments."""
    try:
        tree = pysource.parse(code)
    except SyntaxError as err:
        raise ProposalError(
            f"offline proposer: the program does not parse: line {err.lineno}: {err.msg}"
        ) from None
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            roots.append(node.slice)
        elif isinstance(node, ast.keyword) and node.arg in STRUCTURAL_KEYWORDS:
            roots.append(node.value)
    return {
        (node.lineno, node.col_offset)
        for root in roots
        for node in ast.walk(root)
        if isinstance(node, ast.Constant) and type(node.value) is int
    }
