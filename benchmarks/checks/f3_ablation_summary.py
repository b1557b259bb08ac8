"""The F³ ablation (issue 22) at a glance: for each of its three networks, every variant's final test accuracy
(mean and standard deviation over seeds) as a bar, with issue 22's goal shaded: at least 1 point above DRTP
and at most 1 point below DFA. Reads the result CSVs of suites ``f3-ablation-mlp``, ``f3-ablation-vit`` and
``f3-ablation-f3vit`` in ``benchmarks/results/`` and writes ``f3-ablation-summary.png`` there; a variant a
suite has not run yet is marked "not run".

    .venv/bin/python benchmarks/checks/f3_ablation_summary.py
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

RESULTS = Path(__file__).resolve().parent.parent / "results"
NETWORKS = {"f3-ablation-mlp": "MLP 3×500", "f3-ablation-vit": "standard ViT (depth 2)",
            "f3-ablation-f3vit": "F³ paper's transformer (f3vit)"}
ANCHORS = ("drtp", "dfa")
GOAL_MARGIN = 0.01  # issue 22: 1 point above DRTP, within 1 point of DFA


def finals(suite: str) -> dict[str, list[float]]:
    """Method → the seeds' final test accuracy, in the CSV's order of methods."""
    out: dict[str, list[float]] = {}
    for row in csv.DictReader(open(RESULTS / f"{suite}.csv")):
        out.setdefault(row["method"], []).append(float(row["final"]))
    return out


def colour(method: str) -> str:
    return "0.55" if method in ANCHORS else "tab:orange" if method.startswith("f3-class") else "tab:blue"


def main() -> Path:
    results = {suite: finals(suite) for suite in NETWORKS}
    variants = list(dict.fromkeys(method for values in results.values() for method in values))
    fig, axes = plt.subplots(1, len(NETWORKS), figsize=(13, 0.32 * len(variants) + 1.6), sharey=True)
    rows = range(len(variants))
    for ax, (suite, title) in zip(axes, NETWORKS.items()):
        mine = results[suite]
        goal = max(statistics.mean(mine["drtp"]) + GOAL_MARGIN, statistics.mean(mine["dfa"]) - GOAL_MARGIN)
        right = max(max(values) for values in mine.values()) + 0.02
        ax.axvspan(goal, right, color="tab:green", alpha=0.15, label="goal: ≥ DRTP + 1 point and ≥ DFA − 1 point")
        ran = [(row, method) for row, method in zip(rows, variants) if method in mine]
        ax.barh([row for row, _ in ran], [statistics.mean(mine[m]) for _, m in ran],
                xerr=[statistics.stdev(mine[m]) if len(mine[m]) > 1 else 0 for _, m in ran],
                color=[colour(m) for _, m in ran], capsize=2)
        smallest = min(min(values) for values in mine.values())
        left = max(0.0, smallest - 0.05)
        for row, method in zip(rows, variants):
            if method not in mine:
                ax.text(left + 0.005, row, "not run", va="center", fontsize=7, color="0.4")
        ax.set_xlim(left, right)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("test accuracy after 5 epochs")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(rows), variants, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("F³ ablation on Fashion-MNIST (mean ± std over 3 seeds; grey: anchors, orange: class-mean "
                 "signals, blue: levers on the faithful signal)", fontsize=9)
    fig.tight_layout()
    path = RESULTS / "f3-ablation-summary.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(main())
