"""Checking what an evaluator returned, so that a bad metric dict is a recorded failure, never a crash.

Rules, and why:
- Values are finite real numbers. NaN or infinity would poison every comparison a sampler makes.
- Booleans are refused: `True` is a flag, not a quantity to optimise, and would silently count as 1.0.
  Return `1.0`/`0.0` explicitly when a rate is meant.
- The primary metric must be present: without it the candidate cannot be ranked.
- `artifacts` (optional) maps names to text for the Researcher and Analyzer; it is truncated, not refused.

Right: `{"sum_radii": 2.51, "radius_std": 0.03, "artifacts": {"summary": "26 circles, valid"}}`
Wrong: `{"sum_radii": float("nan")}`, `{"valid": True}`, `{"sum_radii": "2.5"}`, `[2.5]`.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from kubevolve.errors import KubevolveError

MAX_ARTIFACT_CHARS = 8000


class MetricsError(KubevolveError, ValueError):
    pass


def validate_metrics(result: Any, primary: str) -> tuple[dict[str, float], dict[str, str]]:
    """Return (metrics, artifacts) or raise MetricsError saying exactly what is wrong."""
    if not isinstance(result, dict):
        raise MetricsError(f"evaluate() must return a dict of metrics, got {type(result).__name__}")
    metrics: dict[str, float] = {}
    artifacts: dict[str, str] = {}
    for key, value in result.items():
        if key == "artifacts":
            if not isinstance(value, dict):
                raise MetricsError(f"'artifacts' must be a dict of name -> text, got {type(value).__name__}")
            artifacts = {str(k): str(v)[-MAX_ARTIFACT_CHARS:] for k, v in value.items()}
            continue
        if not isinstance(key, str):
            raise MetricsError(f"metric names must be strings, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, Real):
            raise MetricsError(f"metric {key!r} must be a number, got {type(value).__name__} {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer too large for a float (JSON integers have no size limit)
            raise MetricsError(f"metric {key!r} is too large for a float ({str(value)[:40]}...)") from None
        if not math.isfinite(value):
            raise MetricsError(f"metric {key!r} is not finite ({value})")
        metrics[key] = value
    if primary not in metrics:
        raise MetricsError(
            f"the primary metric {primary!r} is missing (got {sorted(metrics) or 'no metrics'})"
        )
    return metrics, artifacts
