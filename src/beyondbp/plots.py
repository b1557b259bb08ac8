"""Plots of test metrics per epoch, of sweeps and of alignment (matplotlib, no display needed)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def figure(path: Path, xlabel: str, ylabel: str, title: str, legend_title: str | None = None) -> Iterator[Any]:
    """Axes to draw on; on leaving, labelled, titled, saved to ``path`` and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(textwrap.fill(title, 90), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title=legend_title)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def metric_curve(history: Sequence[Mapping[str, Any]], metric: str) -> dict[int, float]:
    """``metric`` of each evaluated epoch of a run's records (``metrics.jsonl``), by epoch."""
    return {r["epoch"]: r[metric] for r in history if metric in r}


def plot_curves(curves: Mapping[str, Sequence[Mapping[int, float]]], metric: str, path: Path,
                title: str = "") -> None:
    """One line per label: the mean over seeds of ``metric`` at the epochs all its runs evaluated
    (:func:`metric_curve`), with a band of ± one std."""
    with figure(path, "epoch", metric.replace("_", " "), title) as ax:
        for label, runs in curves.items():
            epochs = sorted(set.intersection(*(set(r) for r in runs)))
            values = np.array([[r[e] for e in epochs] for r in runs], dtype=float)
            mean, std = values.mean(axis=0), values.std(axis=0)
            ax.plot(epochs, mean, label=label)
            if len(runs) > 1:
                ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)


def plot_sweep(points: Mapping[str, Mapping[float, Sequence[float]]], baselines: Mapping[str, Sequence[float]],
               metric: str, xlabel: str, path: Path, title: str = "") -> None:
    """A metric against a swept number (rank, width): one line per series with ± one std over
    seeds, and each baseline method as a dashed horizontal line at its mean."""
    with figure(path, xlabel, metric.replace("_", " "), title) as ax:
        for label, by_x in points.items():
            xs = sorted(by_x)
            ax.errorbar(xs, [np.mean(by_x[x]) for x in xs], yerr=[np.std(by_x[x]) for x in xs], marker="o",
                        capsize=3, label=label)
        for i, (label, values) in enumerate(baselines.items()):
            ax.axhline(np.mean(values), linestyle="--", color=f"C{len(points) + i}", label=label)
        xs = [x for by_x in points.values() for x in by_x]
        if xs and min(xs) > 0 and max(xs) / min(xs) >= 16:
            ax.set_xscale("log", base=2)


def plot_alignment(records: Sequence[dict], path: Path, title: str = "") -> None:
    """Per-layer cosine between the method's gradient and backprop's, over epochs."""
    with figure(path, "epoch", "cosine with the exact gradient", title, legend_title="layer (module)") as ax:
        epochs = [r["epoch"] for r in records]
        for layer in records[0]["alignment"]["layers"]:
            ax.plot(epochs, [r["alignment"]["layers"][layer]["cosine"] for r in records], marker="o", label=layer)


def plot_ranks(events: Sequence[dict], path: Path, title: str = "") -> None:
    """Rank of every low-rank layer at each update of the low-rank schedule, over training steps."""
    with figure(path, "optimizer step", "rank", title, legend_title="layer (module)") as ax:
        layers = list(dict.fromkeys(layer for event in events for layer in event["ranks"]))
        for layer in layers:
            points = [(e["step"], e["ranks"][layer]) for e in events if layer in e["ranks"]]
            ax.plot(*zip(*points), marker=".", drawstyle="steps-post", label=layer)


def plot_throughput(labels: Sequence[str], values: Sequence[float], path: Path, title: str = "") -> None:
    """Horizontal bars: samples per second of each configuration (backprop grey), the first one's value marked."""
    with figure(path, "training samples per second", "", title) as ax:
        positions = np.arange(len(labels))[::-1]
        ax.barh(positions, values, color=["#777777" if label.startswith("bp") else "#3b75af" for label in labels])
        ax.set_yticks(positions, labels, fontsize=8)
        ax.axvline(values[0], color="black", linewidth=0.8, linestyle="--", label=labels[0])
        for y, value in zip(positions, values):
            ax.text(value, y, f" {value:.0f}", va="center", fontsize=8)
