"""The closed sets the loop and its runtimes agree on, as enums: a typo is an error, not a silent new label."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """An engine step, as `kubevolve step ROLE` runs it and as a Job's `kubevolve.io/role` label names it."""

    PROPOSE = "propose"
    EVALUATE = "evaluate"
    ANALYZE = "analyze"
