"""How well forward gradients approximate the true gradient: cosine and norm ratio against k.

For each dimension n, number of tangents k and aggregation, ``samples`` independent draws
of the tangents estimate the gradient of a fixed random vector's direction (any ``g``
works for rotation-invariant samplers); reported are the mean and std of the cosine
between estimate and ``g`` and of ``|estimate| / |g|`` (Flügel et al. 2024, Sec. 4).
Expected for Gaussian tangents and k ≪ n: cosine ≈ sqrt(k/n) for mean and projection;
norm ratio ≈ sqrt(n/k) (mean), sqrt(k/n) (projection), sqrt(n k) (sum).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .methods.aggregation import aggregate
from .methods.tangents import sample_tangents
from .tables import write_rows

APPROX_COLUMNS = ("n", "k", "aggregation", "sampler", "cosine_mean", "cosine_std", "norm_ratio_mean",
                  "norm_ratio_std")


def approximation_quality(dims: Sequence[int], tangents: Sequence[int], aggregations: Sequence[str],
                          sampler: str = "normal", samples: int = 100, seed: int = 0,
                          angle: float | None = None) -> list[dict[str, Any]]:
    """One row per (n, k, aggregation) with k usable for that n (projection, basis, angle: k ≤ n)."""
    rows = []
    torch.manual_seed(seed)
    for n in dims:
        g = torch.randn(n, dtype=torch.float64)
        for k in tangents:
            for how in aggregations:
                if (how == "single" and k != 1) or (k > n and (how == "projection" or sampler != "normal")):
                    continue
                cosines, ratios = [], []
                for _ in range(samples):
                    v = sample_tangents(sampler, k, n, angle=angle).double()
                    estimate = aggregate(v, v @ g, how)
                    cosines.append(torch.nn.functional.cosine_similarity(estimate, g, dim=0).item())
                    ratios.append((estimate.norm() / g.norm()).item())
                rows.append({"n": n, "k": k, "aggregation": how, "sampler": sampler,
                             "cosine_mean": statistics.fmean(cosines), "cosine_std": statistics.pstdev(cosines),
                             "norm_ratio_mean": statistics.fmean(ratios), "norm_ratio_std": statistics.pstdev(ratios)})
    return rows


def write_approx(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """``out_dir/approx.csv`` and ``out_dir/approx.png`` (cosine and norm ratio against k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows(rows, out_dir / "approx.csv", APPROX_COLUMNS)
    fig, (cos_ax, norm_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for key in sorted({(r["n"], r["aggregation"]) for r in rows}):
        series = [r for r in rows if (r["n"], r["aggregation"]) == key]
        ks = [r["k"] for r in series]
        label = f"n={key[0]}, {key[1]}"
        cos_ax.errorbar(ks, [r["cosine_mean"] for r in series], [r["cosine_std"] for r in series], label=label,
                        marker="o", capsize=2)
        norm_ax.plot(ks, [r["norm_ratio_mean"] for r in series], marker="o", label=label)
    for ax, name in ((cos_ax, "cosine with the true gradient"), (norm_ax, "norm ratio |estimate| / |gradient|")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tangents k")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    norm_ax.set_yscale("log")
    cos_ax.legend(fontsize=7)
    fig.suptitle(f"forward-gradient approximation ({rows[0]['sampler']} tangents)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "approx.png", dpi=120)
    plt.close(fig)
