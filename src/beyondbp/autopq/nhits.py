"""N-HiTS as an AutoPQ point forecaster, written here in torch.

Challu, Olivares, Oreshkin, Garza, Mergenthaler-Canseco, Dubrawski (2023), "N-HiTS: Neural Hierarchical
Interpolation for Time Series Forecasting", AAAI. Each stack ``s`` holds blocks that

1. max-pool the (residual) history with kernel ``k_s`` (multi-rate input sampling, Sec. 3.1),
2. pass it, with the exogenous features and the calendar (as in NBEATSx), through an MLP,
3. emit a backcast of the history and ``⌈H / r_s⌉`` forecast coefficients that are linearly interpolated
   to the ``H = 24`` hours (hierarchical interpolation, Sec. 3.2, expressiveness ratio ``r_s``);

the history loses each block's backcast (doubly residual stacking) and the forecast is the sum of all
blocks' forecasts. Defaults: three stacks of one block, kernels (4, 2, 1), ratios (12, 4, 1), MLPs of two
layers of 512 ReLU units (the paper's default width; dropout after each, 0 by default), Adam (lr 1e-3),
MAE loss, batch 256, at most 100 epochs with early stopping (patience 10) on a random 20% of the training
windows. The history is the previous 24 hours that every AutoPQ window carries
(:func:`~beyondbp.autopq.series.make_windows`).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..errors import DivergenceError
from .series import HORIZON


class NHiTSBlock(nn.Module):
    def __init__(self, history: int, covariates: int, kernel: int, ratio: int, width: int, layers: int,
                 dropout: float = 0.0):
        super().__init__()
        self.kernel, self.coefficients = kernel, math.ceil(HORIZON / ratio)
        pooled = math.ceil(history / kernel)
        sizes = [pooled + covariates] + [width] * layers
        self.mlp = nn.Sequential(*(m for a, b in zip(sizes, sizes[1:])
                                   for m in (nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout))))
        self.backcast = nn.Linear(width, history)
        self.forecast = nn.Linear(width, self.coefficients)

    def forward(self, history: Tensor, covariates: Tensor) -> tuple[Tensor, Tensor]:
        pooled = F.max_pool1d(history[:, None], self.kernel, self.kernel, ceil_mode=True)[:, 0]
        hidden = self.mlp(torch.cat([pooled, covariates], dim=1))
        coefficients = self.forecast(hidden)[:, None]
        forecast = F.interpolate(coefficients, size=HORIZON, mode="linear", align_corners=True)[:, 0] \
            if self.coefficients > 1 else coefficients[:, 0].expand(-1, HORIZON)
        return self.backcast(hidden), forecast


class NHiTS(nn.Module):
    """``forward(c) -> ŷ`` for AutoPQ conditions ``c`` (history first, then covariates)."""

    def __init__(self, num_conditions: int, history: int = HORIZON, kernels: tuple[int, ...] = (4, 2, 1),
                 ratios: tuple[int, ...] = (12, 4, 1), width: int = 512, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.history = history
        self.blocks = nn.ModuleList(NHiTSBlock(history, num_conditions - history, k, r, width, layers, dropout)
                                    for k, r in zip(kernels, ratios))

    def forward(self, c: Tensor) -> Tensor:
        residual, covariates = c[:, : self.history], c[:, self.history:]
        forecast = torch.zeros(len(c), HORIZON, dtype=c.dtype, device=c.device)
        for block in self.blocks:
            backcast, block_forecast = block(residual, covariates)
            residual, forecast = residual - backcast, forecast + block_forecast
        return forecast


class NHiTSForecaster:
    """Trains :class:`NHiTS` on the training windows (see the module docstring for the settings)."""

    def __init__(self, seed: int = 0, epochs: int = 100, patience: int = 10, batch_size: int = 256,
                 lr: float = 1e-3, held_out: float = 0.2, device: str = "cpu", **shape):
        self.seed, self.epochs, self.patience, self.batch_size = seed, epochs, patience, batch_size
        self.lr, self.held_out, self.device, self.shape = lr, held_out, torch.device(device), shape

    def fit(self, c: np.ndarray, y: np.ndarray) -> NHiTSForecaster:
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.net = NHiTS(c.shape[1], **self.shape).to(self.device)
        c_all = torch.as_tensor(c, dtype=torch.float32, device=self.device)
        y_all = torch.as_tensor(y, dtype=torch.float32, device=self.device)
        order = torch.randperm(len(y_all), generator=generator)
        held_count = max(1, int(round(self.held_out * len(order))))
        held, fit = order[:held_count], order[held_count:]
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        best, best_state, waited = math.inf, None, 0
        bar = tqdm(range(self.epochs), desc="nhits, epochs", disable=None, leave=False)
        for _ in bar:
            self.net.train()
            for batch in fit[torch.randperm(len(fit), generator=generator)].split(self.batch_size):
                optimizer.zero_grad(set_to_none=True)
                F.l1_loss(self.net(c_all[batch]), y_all[batch]).backward()
                optimizer.step()
            self.net.eval()
            with torch.no_grad():
                loss = F.l1_loss(self.net(c_all[held]), y_all[held]).item()
            bar.set_postfix({"held-out MAE": f"{loss:.4f}"})
            if loss < best:
                best, best_state, waited = loss, copy.deepcopy(self.net.state_dict()), 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if best_state is None:
            raise DivergenceError("N-HiTS training diverged: the held-out error was never finite; try a smaller lr")
        self.net.load_state_dict(best_state)
        return self

    def predict(self, c: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.as_tensor(c, dtype=torch.float32, device=self.device)).cpu().numpy()
