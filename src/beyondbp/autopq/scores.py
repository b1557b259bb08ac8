"""Scores of quantile forecasts, all on the normalised scale (AutoPQ, Meisenbacher et al. 2024, Sec. 4).

Quantiles ``q`` have shape ``[..., L]`` for the levels ``levels`` (``[L]``, increasing); ``y`` is ``[...]``.

- pinball loss of level τ: ``ρ_τ(y − q) = max(τ (y − q), (τ − 1)(y − q))``, averaged over levels and points;
- ``crps`` (ours) from the quantile function: ``CRPS = 2 ∫₀¹ ρ_τ(y − q_τ) dτ``, integrated by the trapezoidal
  rule over the given levels (the tails beyond the first and last level are left out, the same for every
  method);
- ``crps_ensemble`` (the authors' metric, ``properscoring.crps_ensemble`` in their code): the quantiles taken
  as M equally weighted ensemble members ``x_i``, ``CRPS = mean_i |x_i − y| − Σ_ij |x_i − x_j| / (2M²)``
  (Gneiting & Raftery 2007, Eq. 20, for the empirical distribution of the members). It ignores where the
  levels lie, so it rewards narrow bands: it is the paper's number, not a proper score of the quantiles;
- coverage error: the mean over levels of ``|P(y ≤ q_τ) − τ|`` (empirical against nominal coverage);
- the 80% band's coverage: the share of points between the 10% and the 90% quantiles;
- MAE and RMSE of the median (level 0.5).
"""

from __future__ import annotations

import numpy as np

#: The paper's 17 quantile levels.
LEVELS = np.array([0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99])


def pinball(y: np.ndarray, q: np.ndarray, levels: np.ndarray = LEVELS) -> np.ndarray:
    """``ρ_τ(y − q_τ)`` for every point and level, shape of ``q``."""
    error = y[..., None] - q
    return np.maximum(levels * error, (levels - 1) * error)


def crps(y: np.ndarray, q: np.ndarray, levels: np.ndarray = LEVELS) -> float:
    """Mean CRPS, ``2 ∫ ρ_τ dτ`` by the trapezoidal rule over ``levels``."""
    return float(2 * np.trapezoid(pinball(y, q, levels), levels, axis=-1).mean())


def crps_ensemble(y: np.ndarray, members: np.ndarray) -> float:
    """Mean CRPS of the empirical distribution of ``members`` (``[..., M]``, any order) at ``y`` (``[...]``)."""
    x = np.sort(members, axis=-1)
    m = x.shape[-1]
    spread = 2 * ((2 * np.arange(1, m + 1) - m - 1) * x).sum(-1)  # Σ_ij |x_i − x_j| from the sorted members
    return float((np.abs(x - y[..., None]).mean(-1) - spread / (2 * m * m)).mean())


def coverage(y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Empirical coverage ``P(y ≤ q_τ)`` per level."""
    return (y[..., None] <= q).reshape(-1, q.shape[-1]).mean(0)


def scores(y: np.ndarray, q: np.ndarray, levels: np.ndarray = LEVELS) -> dict[str, float]:
    """Every score of one quantile forecast."""
    level = lambda tau: int(np.argmin(np.abs(levels - tau)))
    median = q[..., level(0.5)]
    inside = (q[..., level(0.1)] <= y) & (y <= q[..., level(0.9)])
    return {"crps": crps(y, q, levels), "crps_ensemble": crps_ensemble(y, q),
            "pinball": float(pinball(y, q, levels).mean()),
            "coverage_error": float(np.abs(coverage(y, q) - levels).mean()), "coverage_80": float(inside.mean()),
            "mae": float(np.abs(y - median).mean()), "rmse": float(np.sqrt(((y - median) ** 2).mean()))}
