"""CSV rows in and out, and the ``mean ± std`` cells of the markdown tables."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def write_rows(rows: Sequence[dict[str, Any]], path: Path, columns: Iterable[str] | None = None) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns or rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows with numbers and booleans parsed back."""
    def parse(value: str) -> Any:
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return {"True": True, "False": False}.get(value, value)

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def mean_std(values: Sequence[float], nan: str = "diverged") -> str:
    """``"0.9750 ± 0.0039"`` (sample standard deviation), or in how many runs the value is NaN, saying what
    that means (``nan``: a metric's NaN is a diverged run)."""
    if any(math.isnan(v) for v in values):
        return f"{nan} in {sum(math.isnan(v) for v in values)} of {len(values)} runs"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"
