"""The untrusted half of circle_packing's evaluation: runs in the candidate's sandboxed process, next to the
candidate's program, and hands its packing back as data. Nothing here is believed: the judge (evaluate.py)
checks the packing and computes every metric itself, in a process the candidate cannot reach. The sum the
program reports is not even sent.
"""

from __future__ import annotations

import numpy as np


def run(program, request: dict) -> dict:
    """One call of the program's run_packing(): its centres and radii as float arrays."""
    result = program.run_packing()
    if not isinstance(result, tuple | list) or len(result) != 3:
        raise ValueError("run_packing() must return a tuple (centers, radii, sum_radii)")
    centers, radii, _reported = result
    return {"centers": np.asarray(centers, dtype=float), "radii": np.asarray(radii, dtype=float)}
