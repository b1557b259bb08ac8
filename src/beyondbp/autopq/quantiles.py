"""Quantiles around a point forecast: AutoPQ's cINN sampling and the three baselines it must beat.

All work on the normalised scale and return ``[N, 24, L]`` quantiles, clipped to the target's range in
the training part and sorted along the levels (so they never cross).

AutoPQ (Meisenbacher et al. 2024, Sec. 3; Phipps et al. 2024): map the point forecast to the latent
space, ``ẑ = f(ŷ; c)``; draw samples ``ẑ ⊙ ε`` with ``ε ~ N(1, σ²)`` elementwise; map them back with
``f⁻¹``; take the empirical quantiles per hour. The spread of these samples is proportional to ``|ẑ|``:
the closer the point forecast lies to the cINN's conditional mode (``ẑ = 0``), the narrower the
quantiles, whatever σ. ``noise="additive"`` samples ``ẑ + σ η`` with ``η ~ N(0, 1)`` instead (a
Gaussian neighbourhood of ``ẑ`` whose width does not depend on it); it is our option, not the paper's.
The noise is drawn once per call from a seeded generator, so the quantiles, as a function of σ, use
common random numbers (a smooth objective for the σ search).

Baselines, each calibrated on the validation windows' residuals ``r = y − ŷ`` of the same forecaster:
``gaussian`` (``ŷ + s_h Φ⁻¹(τ)`` with ``s_h`` the residuals' standard deviation at hour ``h`` of the
horizon), ``conformal`` (``ŷ + `` the residuals' empirical τ-quantile at hour ``h``: split conformal),
``quantile-gbt`` (LightGBM trained on the pinball loss of each level, on the validation windows, with the
conditions, the point forecast of the hour and the hour as inputs).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import BeyondBPError
from ..registry import Registry
from .cinn import ConditionalINN
from .scores import LEVELS

#: How samples are drawn around the point forecast's latent ``ẑ``: the paper's ``ẑ ⊙ ε`` or ``ẑ + σ η``.
LATENT_NOISE = ("multiplicative", "additive")


def finish(q: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to the physical range and sort along the levels."""
    return np.sort(np.clip(q, low, high), axis=-1)


class CINNSampler:
    """AutoPQ's quantiles for a fixed set of windows; :meth:`quantiles` for any σ."""

    def __init__(self, net: ConditionalINN, c: np.ndarray, y_hat: np.ndarray, samples: int = 100, seed: int = 0,
                 device: str | torch.device = "cpu", noise: str = "multiplicative"):
        if noise not in LATENT_NOISE:
            raise BeyondBPError(f"unknown latent noise '{noise}'; known: {', '.join(LATENT_NOISE)}")
        self.net, self.device, self.additive = net, torch.device(device), noise == "additive"
        self.c = torch.as_tensor(c, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            self.z_hat, _ = net(torch.as_tensor(y_hat, dtype=torch.float32, device=self.device), self.c)
        generator = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(samples, *self.z_hat.shape, generator=generator).to(self.device)

    def samples(self, sigma: float) -> torch.Tensor:
        """``[S, N, 24]`` samples of the target, normalised."""
        s, n, d = self.noise.shape
        spread = sigma * self.noise if self.additive else self.z_hat[None] * sigma * self.noise
        z = (self.z_hat[None] + spread).reshape(s * n, d)
        with torch.no_grad():
            y = self.net.inverse(z, self.c.repeat(s, 1))
        return y.reshape(s, n, d)

    def quantiles(self, sigma: float, low: float, high: float, levels: np.ndarray = LEVELS) -> np.ndarray:
        y = self.samples(sigma)
        q = torch.quantile(y, torch.as_tensor(levels, dtype=y.dtype, device=y.device), dim=0)  # [L, N, 24]
        return finish(q.permute(1, 2, 0).cpu().numpy(), low, high)


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
