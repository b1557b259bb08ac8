"""Quantiles around a point forecast: the three baselines AutoPQ must beat (its own cINN sampling:
:mod:`.samplers`).

All work on the normalised scale and return ``[N, 24, L]`` quantiles, clipped to the target's range in
the training part and sorted along the levels (so they never cross).

Baselines, each calibrated on the validation windows' residuals ``r = y − ŷ`` of the same forecaster:
``gaussian`` (``ŷ + s_h Φ⁻¹(τ)`` with ``s_h`` the residuals' standard deviation at hour ``h`` of the
horizon), ``conformal`` (``ŷ + `` the residuals' empirical τ-quantile at hour ``h``: split conformal),
``quantile-gbt`` (LightGBM trained on the pinball loss of each level, on the validation windows, with the
conditions, the point forecast of the hour and the hour as inputs).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..registry import Registry
from .scores import LEVELS


def finish(q: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to the physical range and sort along the levels."""
    return np.sort(np.clip(q, low, high), axis=-1)


BASELINES: Registry = Registry("baseline")


@BASELINES.register("gaussian", "point forecast + Gaussian quantiles of the validation residuals, per hour")
def gaussian(y_hat: np.ndarray, residuals: np.ndarray, levels: np.ndarray = LEVELS, **_) -> np.ndarray:
    from scipy.stats import norm  # scipy.stats takes half a second to import: only here

    spread = residuals.std(axis=0)  # [24]
    return y_hat[..., None] + spread[None, :, None] * norm.ppf(levels)


@BASELINES.register("conformal", "point forecast + empirical quantiles of the validation residuals, per hour")
def conformal(y_hat: np.ndarray, residuals: np.ndarray, levels: np.ndarray = LEVELS, **_) -> np.ndarray:
    return y_hat[..., None] + np.quantile(residuals, levels, axis=0).T[None]


def _rows(c: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """One row per (window, hour): the conditions, the hour's point forecast and the hour."""
    n, d = y_hat.shape
    hours = np.tile(np.arange(d, dtype=np.float32), n)
    return np.column_stack([np.repeat(c, d, axis=0), y_hat.reshape(-1), hours])


@BASELINES.register("quantile-gbt", "LightGBM trained on the pinball loss of each level (validation windows)")
def quantile_gbt(y_hat: np.ndarray, residuals: np.ndarray, levels: np.ndarray = LEVELS, *, c: np.ndarray,
                 fit_c: np.ndarray, fit_y_hat: np.ndarray, fit_y: np.ndarray, seed: int = 0) -> np.ndarray:
    from lightgbm import LGBMRegressor

    x_fit, x = _rows(fit_c, fit_y_hat), _rows(c, y_hat)
    columns = []
    for level in tqdm(levels, desc="quantile-gbt, level", disable=None, leave=False):
        model = LGBMRegressor(objective="quantile", alpha=float(level), random_state=seed, verbose=-1, n_jobs=1)
        columns.append(model.fit(x_fit, fit_y.reshape(-1)).predict(x))
    return np.stack(columns, axis=-1).reshape(*y_hat.shape, len(levels))
