"""Conformal calibration of sampled quantiles (ours, not in the AutoPQ paper).

For level τ and horizon hour h, the quantile ``q_τ,h`` is shifted by ``d_τ,h``, the empirical τ-quantile of
``y_h − q_τ,h`` over calibration windows, so that on those windows ``P(y_h ≤ q_τ,h + d_τ,h) = τ``:
the per-level adjustment of conformalised quantile regression (Romano, Patterson & Candès 2019), once per
level and hour. The cINN's shape across levels is kept; its coverage is fixed.

The shifts for the test windows are fitted on all validation windows. To choose among samplers honestly,
:func:`later_half_crps` scores every sampler on the later half of the validation windows, a calibrated one
shifted by what the earlier half shows: calibrated on the past, scored on the future, as on the test
windows (a series drifts, so cross-fitting both ways would also apply the future to the past).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BeyondBPError
from .quantiles import finish
from .scores import crps


def minimum_windows(levels: np.ndarray) -> int:
    """Windows each calibration half needs: enough for the most extreme level to have one window beyond it."""
    return math.ceil(1 / min(levels[0], 1 - levels[-1]))


def check_windows(windows: int, levels: np.ndarray) -> None:
    """Refuse a calibration split too short for ``levels`` (each half of it needs :func:`minimum_windows`)."""
    need = minimum_windows(levels)
    if windows // 2 < need:
        raise BeyondBPError(f"conformal calibration needs at least {2 * need} validation windows for levels "
                            f"{levels[0]:g} to {levels[-1]:g} (each half {need}), the series gives {windows}; use "
                            f"a longer series, a smaller --stride, less extreme --levels, or a sampler without "
                            f"'+conformal'")


def shifts(y: np.ndarray, q: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``[24, L]``: for each hour and level, the τ-quantile of ``y − q_τ`` over the windows (``y`` ``[N, 24]``,
    ``q`` ``[N, 24, L]``)."""
    return np.stack([np.quantile(y - q[..., k], level, axis=0) for k, level in enumerate(levels)], axis=-1)


def calibrate(q: np.ndarray, offsets: np.ndarray, low: float, high: float) -> np.ndarray:
    """``q`` shifted by ``offsets`` (:func:`shifts`), clipped to the physical range and sorted."""
    return finish(q + offsets[None], low, high)


def later_half_crps(y: np.ndarray, q: np.ndarray, levels: np.ndarray, low: float, high: float,
                    conformal: bool) -> float:
    """The CRPS of ``q`` on the later half of the windows; with ``conformal``, shifted by the earlier half's
    :func:`shifts`."""
    half = len(y) // 2
    later = q[half:]
    if conformal:
        later = calibrate(later, shifts(y[:half], q[:half], levels), low, high)
    return crps(y[half:], later, levels)
