"""AutoPQ's pictures: a fan chart of two test weeks and a reliability plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
