"""The NOTES.md tables comparing a suite whose learning rates came from a grid with its tuned twin: per data
set and model, each method's chosen rate and mean final metric under both, and the methods' ordering under
both (``changed`` where it differs). Reads the suites' result CSVs in ``benchmarks/results/``.

    .venv/bin/python benchmarks/checks/tuned_vs_grid.py f3-classification f3-classification-tuned
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

from beyondbp.bench.report import LARGER_IS_BETTER

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _finals(suite: str) -> tuple[dict[tuple[str, str], dict[str, list[float]]], dict[tuple[str, str], str]]:
    """(dataset, model) → method → the seeds' final metric, in the CSV's order of methods; and each cell's metric."""
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    metrics: dict[tuple[str, str], str] = {}
    for row in csv.DictReader(open(RESULTS / f"{suite}.csv")):
        cells.setdefault((row["dataset"], row["model"]), {}).setdefault(row["method"], []).append(float(row["final"]))
        metrics[(row["dataset"], row["model"])] = row["metric"]
    return cells, metrics


def _chosen_rates(suite: str) -> dict[tuple[str, str, str], float]:
    return {(row["dataset"], row["model"], row["method"]): float(row["lr"])
            for row in csv.DictReader(open(RESULTS / f"{suite}-lr.csv")) if row["chosen"] == "True"}


def _ordering(finals: dict[str, list[float]], larger_is_better: bool) -> list[str]:
    return sorted(finals, key=lambda method: statistics.mean(finals[method]), reverse=larger_is_better)


def tables(grid: str, tuned: str) -> str:
    (grid_finals, metrics), (tuned_finals, _) = _finals(grid), _finals(tuned)
    grid_rates, tuned_rates = _chosen_rates(grid), _chosen_rates(tuned)
    spread = lambda values: f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" \
        if len(values) > 1 else f"{values[0]:.4f}"
    out = []
    for cell, methods in grid_finals.items():
        if cell not in tuned_finals:
            continue
        larger = LARGER_IS_BETTER[metrics[cell]]
        out += [f"### {cell[0]}, {cell[1]} ({metrics[cell]}, final epoch, mean ± std over seeds)", "",
                "| method | grid: lr | grid: final | tuned: lr | tuned: final |", "|---|---|---|---|---|"]
        for method, values in methods.items():
            tuned_values = tuned_finals[cell].get(method)
            tuned_text = spread(tuned_values) if tuned_values else "not run"
            tuned_rate = tuned_rates.get((*cell, method))
            tuned_rate_text = f"{tuned_rate:.3g}" if tuned_rate else "–"
            out.append(f"| {method} | {grid_rates[(*cell, method)]:.3g} | {spread(values)} | "
                       f"{tuned_rate_text} | {tuned_text} |")
        shared = {method: values for method, values in methods.items() if method in tuned_finals[cell]}
        before = _ordering(shared, larger)
        after = _ordering({method: tuned_finals[cell][method] for method in shared}, larger)
        out += ["", f"grid: {' > '.join(before)}", f"tuned: {' > '.join(after)}" +
                ("" if before == after else "  (changed)"), ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(*sys.argv[1:3]))
