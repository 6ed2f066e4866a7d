"""The judge of circle packing: ask the candidate for its packing, check it exactly, score the sum of radii.

This module runs in the engine's trusted judge process, where no candidate code ever executes; the candidate
runs in its own sandboxed process (run.py calls its run_packing() there) and all that crosses over is two
arrays, the centres and the radii. So nothing the candidate does can reach these checks: the sum is computed
here, and validity is tested with plain float arithmetic on values copied out of those arrays.

Stages: "quick" asks for the packing once and checks it. "full" does the same, then restarts the candidate (a
fresh process and a fresh import) and asks again, rejecting it when the two sums differ (a score must be
reproducible).
"""

from __future__ import annotations

import math

from numpy import asarray, isfinite

from kubevolve.sdk.judging import Candidate

N_CIRCLES = 26
REFERENCE_SUM = 2.635  # AlphaEvolve's published result for 26 circles
TOLERANCE = 1e-12  # the most a circle may poke out of the square or into another circle
REPRODUCIBLE_WITHIN = 1e-9  # "full" stage: largest accepted difference between two runs' sums


def judge(candidate: Candidate, stage: str) -> dict:
    if stage not in ("quick", "full"):
        raise ValueError(f"unknown stage {stage!r} (expected 'quick' or 'full')")
    centers, radii = _packing(candidate.request({}))
    check_packing(centers, radii)
    total = math.fsum(radii)
    if stage == "full":
        candidate.restart()
        again_centers, again_radii = _packing(candidate.request({}))
        check_packing(again_centers, again_radii)
        again = math.fsum(again_radii)
        if abs(again - total) > REPRODUCIBLE_WITHIN:
            raise ValueError(f"not reproducible: a second run gave sum {again:.12f}, the first {total:.12f}")
    mean = total / N_CIRCLES
    std = math.sqrt(math.fsum((r - mean) ** 2 for r in radii) / N_CIRCLES)
    return {
        "sum_radii": total,
        "target_ratio": total / REFERENCE_SUM,
        "radius_std": std,
        "min_radius": min(radii),
        "max_radius": max(radii),
        "artifacts": {"summary": _summary(centers, radii, total)},
    }


def _packing(outputs: object) -> tuple[list[tuple[float, float]], list[float]]:
    """The centres and radii the candidate sent, checked for shape and finiteness, as plain floats."""
    if not isinstance(outputs, dict) or set(outputs) != {"centers", "radii"}:
        raise ValueError("the runner must send exactly 'centers' and 'radii'")
    try:
        centers = asarray(outputs["centers"], dtype=float)
        radii = asarray(outputs["radii"], dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"centers and radii must be arrays of numbers: {err}") from None
    if centers.shape != (N_CIRCLES, 2):
        raise ValueError(f"centers must have shape ({N_CIRCLES}, 2), got {centers.shape}")
    if radii.shape != (N_CIRCLES,):
        raise ValueError(f"radii must have shape ({N_CIRCLES},), got {radii.shape}")
    if not isfinite(centers).all():
        raise ValueError(f"circle {_first_false(isfinite(centers).all(axis=1))} has a non-finite centre")
    if not isfinite(radii).all():
        raise ValueError(f"circle {_first_false(isfinite(radii))} has a non-finite radius")
    return [(float(x), float(y)) for x, y in centers.tolist()], [float(r) for r in radii.tolist()]


def check_packing(centers: list[tuple[float, float]], radii: list[float]) -> None:
    """Raise ValueError naming the first violation: negative radius, a circle leaving the square, an overlap."""
    for i, r in enumerate(radii):
        if r < 0:
            raise ValueError(f"circle {i} has a negative radius {r:.3e}")
    for i, ((x, y), r) in enumerate(zip(centers, radii, strict=True)):
        for edge, excess in (
            ("left", r - x),
            ("right", x + r - 1.0),
            ("bottom", r - y),
            ("top", y + r - 1.0),
        ):
            if excess > TOLERANCE:
                raise ValueError(f"circle {i} leaves the square at the {edge} edge by {excess:.3e}")
    for i in range(N_CIRCLES):
        xi, yi = centers[i]
        for j in range(i + 1, N_CIRCLES):
            xj, yj = centers[j]
            overlap = radii[i] + radii[j] - ((xi - xj) ** 2 + (yi - yj) ** 2) ** 0.5
            if overlap > TOLERANCE:
                raise ValueError(f"circles {i} and {j} overlap by {overlap:.3e}")


def _first_false(flags) -> int:
    return int(next(i for i, ok in enumerate(flags.tolist()) if not ok))


def _summary(centers: list[tuple[float, float]], radii: list[float], total: float) -> str:
    lines = [
        f"sum of radii {total:.6f} ({total / REFERENCE_SUM:.2%} of the reference {REFERENCE_SUM})",
        f"radii: min {min(radii):.4f}, max {max(radii):.4f}; "
        f"{sum(r < 1e-6 for r in radii)} circles with zero radius",
        "circle  x       y       r",
    ]
    order = sorted(range(N_CIRCLES), key=lambda i: -radii[i])
    lines += [f"{i:>6}  {centers[i][0]:.4f}  {centers[i][1]:.4f}  {radii[i]:.4f}" for i in order]
    return "\n".join(lines)
