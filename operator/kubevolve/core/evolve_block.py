"""EVOLVE-BLOCK markers: the region of a program that evolution may change.

A program marks its evolvable region with comment lines containing the start and end markers (by default
`EVOLVE-BLOCK-START` / `EVOLVE-BLOCK-END`). Several blocks are allowed; everything outside them is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubevolve.errors import KubevolveError

START = "EVOLVE-BLOCK-START"
END = "EVOLVE-BLOCK-END"


class BlockError(KubevolveError, ValueError):
    pass


@dataclass(frozen=True)
class Split:
    """A program cut into frozen parts and evolvable blocks: frozen[0], block[0], frozen[1], ..., frozen[n]."""

    frozen: tuple[str, ...]
    blocks: tuple[str, ...]

    def join(self, blocks: list[str] | tuple[str, ...] | None = None) -> str:
        blocks = self.blocks if blocks is None else tuple(blocks)
        if len(blocks) != len(self.blocks):
            raise BlockError(f"expected {len(self.blocks)} evolve blocks, got {len(blocks)}")
        out = [self.frozen[0]]
        for block, frozen in zip(blocks, self.frozen[1:], strict=True):
            out.append(block)
            out.append(frozen)
        return "".join(out)


def split(code: str, start: str = START, end: str = END) -> Split:
    """Split a program at its markers. The marker lines themselves belong to the frozen parts."""
    frozen: list[str] = []
    blocks: list[str] = []
    current: list[str] = []
    inside = False
    for number, line in enumerate(code.splitlines(keepends=True), start=1):
        if start in line:
            if inside:
                raise BlockError(f"line {number}: {start} inside an open evolve block")
            current.append(line)
            frozen.append("".join(current))
            current, inside = [], True
        elif end in line:
            if not inside:
                raise BlockError(f"line {number}: {end} without a matching {start}")
            blocks.append("".join(current))
            current, inside = [line], False
        else:
            current.append(line)
    if inside:
        raise BlockError(f"{start} is never closed by {end}")
    frozen.append("".join(current))
    if not blocks:
        raise BlockError(f"no evolve block: the program has no {start} / {end} markers")
    return Split(tuple(frozen), tuple(blocks))


def changed_outside_blocks(parent: str, child: str, start: str = START, end: str = END) -> str | None:
    """Return a description of the first change outside the evolve blocks, or None if there is none."""
    try:
        child_split = split(child, start, end)
    except BlockError as err:
        return f"evolve-block markers broken: {err}"
    parent_split = split(parent, start, end)
    if len(child_split.blocks) != len(parent_split.blocks):
        return (
            f"the program has {len(child_split.blocks)} evolve blocks, its parent {len(parent_split.blocks)}"
        )
    for index, (a, b) in enumerate(zip(parent_split.frozen, child_split.frozen, strict=True)):
        if a != b:
            where = "before the first evolve block" if index == 0 else f"after evolve block {index}"
            return f"code changed outside the evolve blocks ({where})"
    return None
