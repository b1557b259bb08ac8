"""The NOTES.md table of suite `autopq-advanced`: per series, the mean over seeds of each configuration's
validation and test CRPS and energy, and the forecasters chosen, read from the suite's results CSV.

    .venv/bin/python benchmarks/checks/autopq_advanced_table.py benchmarks/results/autopq-advanced/autopq-advanced.csv
"""

from __future__ import annotations

import csv
import statistics
import sys


def table(path: str) -> str:
    rows = list(csv.DictReader(open(path)))
    mean = lambda part, key: statistics.mean(float(r[key]) for r in part)
    lines = ["| series | seeds | default: validation CRPS | default: test CRPS | default Wh | advanced: chosen | "
             "advanced: validation | advanced: test | advanced Wh |", "|---|---|---|---|---|---|---|---|---|"]
    for series in dict.fromkeys(r["dataset"] for r in rows):
        default = [r for r in rows if r["dataset"] == series and r["configuration"] == "default"]
        advanced = [r for r in rows if r["dataset"] == series and r["configuration"] == "advanced"]
        better = mean(advanced, "test_crps") < mean(default, "test_crps")
        worse = mean(advanced, "test_crps") > mean(default, "test_crps")  # equal where the default was kept
        bold = lambda value, win: f"**{value:.4f}**" if win else f"{value:.4f}"
        chosen = ", ".join(r["forecaster"] + (" (default's)" if r.get("chosen") == "default" else "")
                           for r in advanced)
        lines.append(f"| {series} | {len(default)} | {mean(default, 'validation_crps'):.4f} | "
                     f"{bold(mean(default, 'test_crps'), worse)} | {mean(default, 'energy_kwh') * 1000:.2f} | "
                     f"{chosen} | {mean(advanced, 'validation_crps'):.4f} | "
                     f"{bold(mean(advanced, 'test_crps'), better)} | {mean(advanced, 'energy_kwh') * 1000:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1]))
