"""A training curve: one row per logged step, rendered as a plain-text table for the candidate's artifacts.

The Researcher and the Analyzer read curves as text, and an artifact is truncated beyond a few thousand
characters, so `to_text` keeps at most `max_rows` rows: the first, the last, and evenly spaced ones between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Curve:
    rows: list[dict[str, float]] = field(default_factory=list)

    def add(self, step: int, tokens: int, seconds: float, **values: float) -> None:
        row = {"step": float(step), "tokens": float(tokens), "seconds": float(seconds)}
        row.update({name: float(value) for name, value in values.items()})
        self.rows.append(row)

    def columns(self) -> list[str]:
        names: list[str] = []
        for row in self.rows:
            names += [name for name in row if name not in names]
        return names

    def last(self, name: str) -> float | None:
        """The latest logged value of `name`, or None if it was never logged."""
        return next((row[name] for row in reversed(self.rows) if name in row), None)

    def series(self, name: str) -> list[tuple[float, float]]:
        """(step, value) for every row that has `name`."""
        return [(row["step"], row[name]) for row in self.rows if name in row]

    def to_text(self, title: str = "training curve", max_rows: int = 40) -> str:
        if not self.rows:
            return f"{title}: no steps logged"
        columns = self.columns()
        rows = _thin(self.rows, max_rows)
        cells = [[_format(row.get(name)) for name in columns] for row in rows]
        widths = [max(len(name), *(len(line[i]) for line in cells)) for i, name in enumerate(columns)]
        lines = [f"{title} ({len(self.rows)} rows, {len(rows)} shown)"]
        lines.append("  ".join(name.rjust(width) for name, width in zip(columns, widths, strict=True)))
        lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
        return "\n".join(lines)


def _thin(rows: list[dict[str, float]], max_rows: int) -> list[dict[str, float]]:
    if len(rows) <= max_rows or max_rows < 2:
        return rows
    picks = sorted({round(i * (len(rows) - 1) / (max_rows - 1)) for i in range(max_rows)})
    return [rows[i] for i in picks]


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    if abs(value) >= 1000 or abs(value) < 1e-3:
        return f"{value:.4g}"
    return f"{value:.4f}"
