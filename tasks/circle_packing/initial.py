"""Circle packing: place 26 circles in the unit square so that the sum of their radii is as large as possible.

Evolution may change only the EVOLVE-BLOCK, which decides where the circles go (and may suggest radii). The
frozen code after it turns any centres into valid radii, so every program that runs yields a valid packing;
the evaluator checks that anyway and recomputes the sum itself.
"""

from __future__ import annotations

import numpy as np

N_CIRCLES = 26


# EVOLVE-BLOCK-START
def place_circles() -> tuple[np.ndarray, np.ndarray | None]:
    """Centres on staggered rows, polished by a short random local search. Returns (centres, radius hints)."""
    centers = staggered_rows(rows=4, bottom=0.12, top=0.88, left=0.1, right=0.9, stagger=0.05)
    centers = local_search(centers, step=0.01, iterations=30, shrink=0.97, seed=0)
    return centers, None


def staggered_rows(
    rows: int, bottom: float, top: float, left: float, right: float, stagger: float
) -> np.ndarray:
    """Spread the circles evenly over horizontal rows in a box; every other row is shifted by `stagger`."""
    per_row, extra = divmod(N_CIRCLES, rows)
    points = []
    for row, y in enumerate(np.linspace(bottom, top, rows)):
        shift = stagger * (row % 2)
        for x in np.linspace(left + shift, right + shift, per_row + (row < extra)):
            points.append((x, y))
    return np.array(points)


def local_search(centers: np.ndarray, step: float, iterations: int, shrink: float, seed: int) -> np.ndarray:
    """Move one random circle by a random step; keep the move if the sum of radii grows, else shrink the step."""
    rng = np.random.default_rng(seed)
    best = max_radii(centers).sum()
    for _ in range(iterations):
        moved = centers.copy()
        moved[rng.integers(len(centers))] += rng.normal(0.0, step, moved.shape[1])
        total = max_radii(moved).sum()
        if total > best:
            centers, best = moved, total
        else:
            step *= shrink
    return centers


# EVOLVE-BLOCK-END


def max_radii(centers: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray:
    """The radii of a valid packing with these centres, each as large as the others allow.

    Centres are clipped into the square. Radii start from the hint (or the distance to the nearest wall),
    are capped by the walls, every overlapping pair is shrunk in proportion, and then each circle grows into
    whatever slack is left, so no single circle can grow any further. Not the LP optimum, but always valid.
    """
    centers = np.clip(np.asarray(centers, dtype=float), 0.0, 1.0)
    x, y = centers[:, 0], centers[:, 1]
    wall = np.minimum(np.minimum(x, 1.0 - x), np.minimum(y, 1.0 - y))
    radii = wall.copy() if hint is None else np.clip(np.nan_to_num(np.asarray(hint, dtype=float)), 0.0, wall)
    dist = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(axis=-1))
    r, d = radii.tolist(), dist.tolist()
    for i in range(len(r)):
        for j in range(i + 1, len(r)):
            total = r[i] + r[j]
            if total > d[i][j]:
                scale = d[i][j] / total
                r[i] *= scale
                r[j] *= scale
    radii = np.array(r)
    np.fill_diagonal(dist, np.inf)
    for i in range(len(radii)):
        radii[i] = max(0.0, min(wall[i], float(np.min(dist[i] - radii))))
    return radii


def run_packing() -> tuple[np.ndarray, np.ndarray, float]:
    """The entry point the evaluator calls: (centres (26, 2), radii (26,), sum of radii)."""
    centers, hint = place_circles()
    centers = np.clip(np.asarray(centers, dtype=float).reshape(N_CIRCLES, 2), 0.0, 1.0)
    radii = max_radii(centers, hint)
    return centers, radii, float(radii.sum())


if __name__ == "__main__":
    print(f"sum of radii: {run_packing()[2]:.6f}")
