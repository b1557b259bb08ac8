"""AutoPQ's pictures: a fan chart of two test weeks, a reliability plot, AutoPQ-advanced's trials, and test
CRPS against energy (suite autopq-advanced)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402

from .scores import coverage  # noqa: E402
from .series import HORIZON, Splits  # noqa: E402

#: Central bands the fan chart aims to draw (the nearest pairs of levels symmetric about the median).
BANDS = (0.98, 0.8, 0.5)


def bands(levels: np.ndarray) -> list[tuple[int, int]]:
    """Index pairs ``(i, L − 1 − i)`` whose width is nearest to each of :data:`BANDS`, widest first."""
    pairs = [(i, len(levels) - 1 - i) for i in range(len(levels) // 2)]
    if not pairs:
        return []
    chosen = [min(pairs, key=lambda p: abs(levels[p[1]] - levels[p[0]] - width)) for width in BANDS]
    return list(dict.fromkeys(chosen))


def fan_chart(splits: Splits, y_hat: np.ndarray, q: np.ndarray, levels: np.ndarray, path: Path, title: str,
              days: int = 14) -> None:
    """The quantile bands, the truth and the point forecast over ``days`` consecutive days of the test part:
    one window a day (every 24th origin from the first), placed end to end, in original units."""
    start = splits.test.start
    step = int(np.argmax(start >= start[0] + np.timedelta64(HORIZON, "h"))) or 1  # origins per day
    chosen = np.arange(0, len(start), step)[:days]
    hours = (start[chosen, None] + np.arange(HORIZON) * np.timedelta64(1, "h")).reshape(-1)
    truth = splits.original(splits.test.y[chosen]).reshape(-1)
    point = splits.original(y_hat[chosen]).reshape(-1)
    quantiles = splits.original(q[chosen]).reshape(-1, q.shape[-1])
    fig, ax = plt.subplots(figsize=(11, 4))
    for alpha, (lo, hi) in zip((0.2, 0.35, 0.5), bands(levels)):
        ax.fill_between(hours, quantiles[:, lo], quantiles[:, hi], color="tab:blue", alpha=alpha, linewidth=0,
                        label=f"{(levels[hi] - levels[lo]) * 100:.3g}% band")
    ax.plot(hours, point, color="tab:orange", linewidth=1, label="point forecast")
    ax.plot(hours, truth, color="black", linewidth=1, label="truth")
    ax.set_title(f"AutoPQ on {title}: {len(chosen)} test days, one 24-hour forecast a day")
    ax.legend(loc="upper right", fontsize=8, ncol=5)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    save(fig, path)


def reliability_plot(y: np.ndarray, quantiles: dict[str, np.ndarray], levels: np.ndarray, path: Path) -> None:
    """Empirical against nominal coverage of every level, one line per method; the diagonal is perfect."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for name, q in quantiles.items():
        ax.plot(levels, coverage(y, q), marker="o", markersize=3, label=name)
    ax.set_xlabel("nominal level")
    ax.set_ylabel("share of test hours below the quantile")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, path)


def trials_plot(rows: list[dict[str, Any]], path: Path, default_crps: float) -> None:
    """Validation CRPS of every finished trial in order, by forecaster, with the best so far and AutoPQ-default's."""
    finished = [r for r in rows if r["state"] == "complete"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in dict.fromkeys(r["forecaster"] for r in finished):
        mine = [r for r in finished if r["forecaster"] == name]
        ax.scatter([r["trial"] for r in mine], [r["validation_crps"] for r in mine], s=14, label=name)
    best = np.minimum.accumulate([r["validation_crps"] for r in finished])
    ax.step([r["trial"] for r in finished], best, where="post", color="black", linewidth=1, label="best so far")
    ax.axhline(default_crps, color="grey", linestyle="--", linewidth=1, label="AutoPQ-default")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation CRPS")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save(fig, path)


def crps_kwh_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Test CRPS against energy (Wh, log scale) per data set: one point per seed and configuration, default and
    advanced joined."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        mine = [r for r in rows if r["dataset"] == dataset]
        for seed in dict.fromkeys(r["seed"] for r in mine):
            pair = [r for r in mine if r["seed"] == seed]
            ax.plot([1000 * float(r["energy_kwh"]) for r in pair], [float(r["test_crps"]) for r in pair],
                    color="grey", linewidth=0.8)
        for configuration, marker in (("default", "o"), ("advanced", "s")):
            points = [r for r in mine if r["configuration"] == configuration]
            ax.scatter([1000 * float(r["energy_kwh"]) for r in points], [float(r["test_crps"]) for r in points],
                       marker=marker, label=configuration)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("Wh")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test CRPS")
    axes[0][0].legend(fontsize=7)
    save(fig, path)


def against_best_baseline_plot(means: dict[tuple[str, str], dict[str, float]], methods: list[str],
                               baselines: list[str], path: Path) -> None:
    """One panel per forecaster: each method's test CRPS divided by the lowest baseline's on each data set
    (``means[(data set, forecaster)][method]``), so that a point left of 1 beats every baseline there."""
    forecasters = list(dict.fromkeys(f for _, f in means))
    datasets = list(dict.fromkeys(d for d, _ in means))
    fig, axes = plt.subplots(1, len(forecasters), figsize=(3.6 * len(forecasters), 0.45 * len(datasets) + 1.4),
                             sharey=True, squeeze=False)
    markers = dict(zip(methods, "osD^v<>"))
    for ax, forecaster in zip(axes[0], forecasters):
        shown = [d for d in datasets if (d, forecaster) in means]
        for offset, method in zip(np.linspace(-0.25, 0.25, len(methods)), methods):
            ratios = [means[(d, forecaster)][method] / min(means[(d, forecaster)][b] for b in baselines)
                      for d in shown]
            ax.scatter(ratios, [datasets.index(d) + offset for d in shown], marker=markers[method], s=18,
                       label=method)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(forecaster, fontsize=9)
        ax.set_xlabel("test CRPS / best baseline's")
        ax.grid(alpha=0.3)
    axes[0][0].set_yticks(range(len(datasets)), datasets)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=7, loc="lower right")
    save(fig, path)


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
