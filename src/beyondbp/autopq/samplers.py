"""How AutoPQ draws samples around the point forecast in the cINN's latent space.

Every sampler clips the point forecast to the target's physical range (as the authors do before the cINN),
maps it to the latent space, ``ẑ = f(clip(ŷ); c)``, draws ``S`` latent samples around it, maps them back
with ``f⁻¹`` and takes the empirical quantiles per hour (clipped and sorted: :func:`.quantiles.finish`).

- ``faithful`` (Meisenbacher et al. 2024, Sec. 3; the authors' ``ProbForecastCINN``): ``ẑ ⊙ ε`` with
  ``ε ~ N(1, σ²)``; σ drawn uniformly between ``sigma_low`` and ``sigma_high`` by TPE, fresh noise at every
  evaluation, and the authors' plateau stop (:data:`PLATEAU`). The spread is proportional to ``|ẑ|``: a
  point forecast near the cINN's conditional mode (``ẑ ≈ 0``) gets almost no band, whatever σ.
- ``additive`` (ours): ``ẑ + σ_h η``, ``η ~ N(0, 1)``, one σ per latent dimension (log-uniform, TPE).
- ``mix`` (ours): ``ρ ẑ + sqrt(1 − ρ²) η``, ρ in [0, 1]: 1 is the point forecast alone, 0 the cINN's own
  conditional distribution, which ignores the point forecast.

Ours draw ``η`` once per set of windows from a seeded generator (common random numbers: the validation
CRPS is smooth in the parameters) and stop when the best has not improved for ``patience`` trials.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .cinn import ConditionalINN
from .quantiles import finish
from .scores import LEVELS
from .series import HORIZON

#: The authors' plateau stop: the standard deviation of the 5 best scores at most 0.0005, 5 trials in a row.
PLATEAU = {"top": 5, "std": 0.0005, "patience": 5}


@dataclass(frozen=True)
class LatentSampler:
    """One way to draw latent samples: its parameters (suggested on an Optuna trial within the σ bounds), the
    draw ``latent(ẑ, η, parameters)``, and how its search runs."""

    name: str
    suggest: Callable[[Any, tuple[float, float]], dict[str, Any]]
    latent: Callable[[Tensor, Tensor, dict[str, Any]], Tensor]
    fresh_noise: bool  # a new η at every evaluation (the authors'), or common random numbers
    plateau_stop: bool  # the authors' plateau stop, or ``patience`` trials without improvement


def _uniform_sigma(trial, bounds: tuple[float, float]) -> dict[str, Any]:
    return {"sigma": trial.suggest_float("sigma", *bounds)}


def _sigma_per_hour(trial, bounds: tuple[float, float]) -> dict[str, Any]:
    return {"sigma": [trial.suggest_float(f"sigma_{h}", *bounds, log=True) for h in range(HORIZON)]}


def _correlation(trial, bounds: tuple[float, float]) -> dict[str, Any]:
    return {"rho": trial.suggest_float("rho", 0.0, 1.0)}


LATENT_SAMPLERS: dict[str, LatentSampler] = {
    "faithful": LatentSampler("faithful", _uniform_sigma, lambda z, eta, p: z * (1 + p["sigma"] * eta),
                              fresh_noise=True, plateau_stop=True),
    "additive": LatentSampler("additive", _sigma_per_hour,
                              lambda z, eta, p: z + torch.as_tensor(p["sigma"], dtype=z.dtype, device=z.device) * eta,
                              fresh_noise=False, plateau_stop=False),
    "mix": LatentSampler("mix", _correlation,
                         lambda z, eta, p: p["rho"] * z + math.sqrt(max(0.0, 1 - p["rho"] ** 2)) * eta,
                         fresh_noise=False, plateau_stop=False),
}


class CINNQuantiles:
    """AutoPQ's quantiles for one set of windows and one point forecast, for any sampler and parameters."""

    def __init__(self, net: ConditionalINN, c: np.ndarray, y_hat: np.ndarray, low: float, high: float,
                 samples: int = 100, seed: int = 0, device: str | torch.device = "cpu"):
        self.net, self.device, self.low, self.high = net, torch.device(device), low, high
        self.samples_per_window = samples
        self.c = torch.as_tensor(c, dtype=torch.float32, device=self.device)
        clipped = np.clip(y_hat, low, high)
        with torch.no_grad():
            self.z_hat, _ = net(torch.as_tensor(clipped, dtype=torch.float32, device=self.device), self.c)
        self.generator = torch.Generator().manual_seed(seed)
        self.common = self._noise()

    def _noise(self) -> Tensor:
        return torch.randn(self.samples_per_window, *self.z_hat.shape, generator=self.generator).to(self.device)

    def samples(self, sampler: LatentSampler, parameters: dict[str, Any]) -> Tensor:
        """``[S, N, 24]`` samples of the target, normalised."""
        eta = self._noise() if sampler.fresh_noise else self.common
        s, n, d = eta.shape
        z = sampler.latent(self.z_hat[None], eta, parameters).reshape(s * n, d)
        with torch.no_grad():
            y = self.net.inverse(z, self.c.repeat(s, 1))
        return y.reshape(s, n, d)

    def quantiles(self, sampler: LatentSampler, parameters: dict[str, Any], levels: np.ndarray = LEVELS) -> np.ndarray:
        """``[N, 24, L]`` quantiles, clipped to the physical range and sorted."""
        y = self.samples(sampler, parameters)
        q = torch.quantile(y, torch.as_tensor(levels, dtype=y.dtype, device=y.device), dim=0)  # [L, N, 24]
        return finish(q.permute(1, 2, 0).cpu().numpy(), self.low, self.high)
