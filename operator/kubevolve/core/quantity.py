"""Kubernetes resource quantities (`500m`, `2`, `8Gi`, `1e3`): the grammar kube-apiserver parses, so that a
value it would refuse (`8GB`, `1.5.5`, `lots`) is refused where it is written, naming the field, instead of
by every Job create of a run."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# kube-apiserver's resource.Quantity grammar, as controller-gen writes it into CRDs
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|"
    r"(\.[0-9]+))))?$"
)
# the same without a sign: what a resource request, limit or quota may be
NON_NEGATIVE_QUANTITY_PATTERN = QUANTITY_PATTERN.replace(r"^(\+|-)?", r"^\+?", 1)
QUANTITY_HINT = "a number with an optional suffix: 500m, 2, 1.5, 8Gi, 512Mi, 10G (binary Ki Mi Gi Ti Pi Ei, decimal k M G T P E)"

_QUANTITY = re.compile(QUANTITY_PATTERN)
_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_SUFFIX: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def is_quantity(value: object) -> bool:
    """A string or a number the API server accepts as a quantity (booleans are not)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and bool(_QUANTITY.match(value))


def parse_quantity(value: str | int | float) -> Decimal:
    """The quantity as a number (`500m` -> 0.5, `2Gi` -> 2147483648); ValueError naming the value otherwise."""
    if not is_quantity(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity: {QUANTITY_HINT}")
    text = str(value)
    number = _NUMBER.match(text)
    assert number is not None  # the grammar starts with one
    suffix = text[number.end() :]
    try:
        if len(suffix) > 1 and suffix[0] in "eE":  # an exponent, not the exa suffix
            return Decimal(text)
        return Decimal(number.group(0)) * _SUFFIX[suffix]
    except (InvalidOperation, KeyError):
        raise ValueError(f"{value!r} is not a Kubernetes quantity: {QUANTITY_HINT}") from None
